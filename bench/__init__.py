"""Benchmarks: ``python bench/run.py`` and friends (see bench/README.md)."""
