"""What tests and benchmarks share: a throwaway Ceph cluster and RADOS namespace cleanup.

May import archipelago only; tests/ and benchmarks/ may import this, never each other
(tests/test_layers.py). Not shipped: run from the repository root.
"""
