"""Side-by-side benchmarks (run as ``python -m benchmarks.<name>``); claims live here, not in tests.

May import archipelago, pithos_gw, control and testbed (the throwaway Ceph); never tests/.
"""
