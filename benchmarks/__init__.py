"""Benchmarks: `python -m benchmarks` runs every `benchmarks/bench_*.py` (protocol: benchmarks/README.md)."""
