"""What tests and benchmarks share: a throwaway Ceph cluster, RADOS namespace cleanup and a
throwaway PostgreSQL (pg_cluster.py).

May import archipelago only; tests/ and benchmarks/ may import this, never each other
(tests/test_layers.py). Not shipped: run from the repository root.
"""
