"""Command-line entry points (thin: the logic lives in ``ovkit``); importable from the repo
root so tests can call the benchmarks in ``tools/analysis`` as modules."""
