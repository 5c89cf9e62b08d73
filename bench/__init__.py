"""Benchmarks: ``python bench/run.py`` and friends (see the README, Performance)."""
