"""Logic of the generic command-line tools; ``tools/*.py`` are thin entry points to these."""
