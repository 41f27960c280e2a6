# Set-up is part of each target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/scbignn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch lies on disk here; installing it first keeps pip from pulling CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

.PHONY: demo test lint docs benchmark
demo: $(BIN)/scbignn
	$(BIN)/scbignn demo --out results

test: $(BIN)/scbignn
	$(BIN)/python -m pytest -q

lint: $(BIN)/scbignn
	$(BIN)/ruff check src tests benchmarks

docs: $(BIN)/scbignn
	$(BIN)/pip install -q -e ".[doc]"
	$(BIN)/sphinx-build -W -n --keep-going -b html docs docs/_build/html
