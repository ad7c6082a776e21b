"""The fault test (issue 13): the four services as processes, under load, while things break.

``python -m tests.chaos`` (``make chaos``) runs the full version; ``tests/chaos/test_chaos.py``
the short one CI runs (pytest marker ``chaos``).  ``processes`` starts and kills the
children (nats-server, a private PostgreSQL, the services), ``load`` sends the complaints,
``faults`` breaks things on a schedule, ``checks`` reads the databases and the dead letters,
and ``run`` puts them together and writes the summary.
"""
