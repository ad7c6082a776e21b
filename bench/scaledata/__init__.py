"""The scale data generator's parts: the plan of each matter (``plan``), one module per service
turning plans into that service's rows, and what they share (``common``).  ``bench/scale_data.py``
is the command; its docstring explains the direct path and the manifest."""
