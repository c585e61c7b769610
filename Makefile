# ovkit: make install | make lint | make test | make demo | make bench
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ovkit-installed
NPROC ?= 2
PYTEST_ARGS ?=

.PHONY: install lint test test-fast demo demo-baron bench clean

install: $(STAMP)

# Re-run the (idempotent) installer only when its inputs change: a second `make install`
# finishes at once.
$(STAMP): setup.py $(wildcard requirements/*.txt) $(wildcard tools/install/*)
	VENV=$(VENV) bash tools/install/install.sh
	touch $(STAMP)

# Lint first: a fast failure before the slow suite (settings in ruff.toml).
lint: install
	$(PY) -m ruff check .

test: install lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: install lint
	$(PY) -m pytest tests -m "not e2e" $(PYTEST_ARGS)

demo: install
	VENV=$(VENV) NPROC=$(NPROC) bash tools/demo.sh

# BARON's part of the demo alone: novel-class AP50 against the ablation (docs/baron.md)
demo-baron: install
	VENV=$(VENV) NPROC=$(NPROC) bash tools/demo_baron.sh

bench: install
	$(PY) tools/analysis/benchmark_accuracy.py

clean:
	rm -rf work_dirs data/shapes .pytest_cache
