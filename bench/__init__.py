"""Benchmarks, experiment grids, tables and figures (run as python -m bench.NAME)."""
