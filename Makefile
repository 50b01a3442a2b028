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
	$(PIP) install --quiet -e '.[dev,optuna,joblib,ray,slurm,postgres]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/mnist-lab-data
	$(BIN)/mnist-lab

# Tests in parallel (pytest-xdist): one worker a core of the 2-core machines the README's figures
# come from (`make test TEST_WORKERS=4` elsewhere). loadscope: a module's tests on one worker, so
# that its fixtures are made once, but for the long modules tests/conftest.py names (SPREAD);
# modules in file order, not fewest tests last (the long real-MNIST module would end it alone).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: $(BIN)/.installed-dev
	$(PYTEST)

test-fast: $(BIN)/.installed-dev
	$(PYTEST) -m "not slow"

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check mnist_lab hydra_plugins tests benchmarks
	$(BIN)/ruff format --check mnist_lab hydra_plugins tests benchmarks
	$(BIN)/mypy

# Prints a table and writes benchmarks/results.json; see benchmarks/README.md.
bench: $(BIN)/.installed-dev
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info
