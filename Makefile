# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: run test test-fast lint bench clean

# Re-install whenever pyproject.toml changes; the stamp records what was installed.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

# The sweep plugins too, so that the Optuna, Ray, joblib and submitit tests run, not skip.
$(BIN)/.installed-dev: $(BIN)/.installed
	$(PIP) install --quiet -e '.[dev,optuna,joblib,ray,slurm]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/mnist-lab-data
	$(BIN)/mnist-lab

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m "not slow"

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check mnist_lab hydra_plugins tests benchmarks
	$(BIN)/ruff format --check mnist_lab hydra_plugins tests benchmarks
	$(BIN)/mypy

# Prints a table and writes benchmarks/results.json; see benchmarks/README.md.
bench: $(BIN)/.installed-dev
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info
