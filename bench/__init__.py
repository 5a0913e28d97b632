"""Benchmarks that justify design choices; run one with ``python -m bench.<name>``."""
