"""Benchmarks and analysis scripts (``from tools.analysis.benchmark_baron import main``)."""
