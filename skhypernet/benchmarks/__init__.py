"""Benchmarks: ``python -m skhypernet.benchmarks {speed}``."""
