"""Benchmarks for sfs (not installed with the package; run with scripts/bench)."""
