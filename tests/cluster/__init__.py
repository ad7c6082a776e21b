"""The product on a real cluster: three NATS nodes (R3 streams), PostgreSQL, two instances of each
service behind a load balancer, and one of each killed under load (issue 13, "A real cluster").

``make cluster`` runs ``tests/cluster/test_cluster.py``; it needs ``TEST_POSTGRES_URL``.
"""
