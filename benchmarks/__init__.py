"""Side-by-side benchmarks (run as ``python -m benchmarks.<name>``); claims live here, not in tests."""
