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

.PHONY: demo test lint docs tutorials benchmark
demo: $(BIN)/scbignn
	$(BIN)/scbignn demo --out results

test: $(BIN)/scbignn
	$(BIN)/python -m pytest -q

lint: $(BIN)/scbignn
	$(BIN)/ruff check src tests benchmarks

docs: $(BIN)/scbignn
	$(BIN)/pip install -q -e ".[doc]"
	$(BIN)/sphinx-build -W -n --keep-going -b html docs docs/_build/html

# Re-executes the tutorials in place with the defaults (about 40 minutes on 2 cores);
# SCBIGNN_DATA_DIR is the folder with kang2018_ifnb_pbmc.h5ad (default: ../shared/data).
tutorials: $(BIN)/scbignn
	$(BIN)/pip install -q -e ".[doc]"
	cd tutorials && for nb in quickstart kang_query; do \
		SCBIGNN_DATA_DIR="$${SCBIGNN_DATA_DIR:-$(CURDIR)/../shared/data}" \
		../$(BIN)/jupyter-execute --inplace --timeout=-1 $$nb.ipynb || exit 1; \
		rm -rf pbmc68k_model kang_ctrl_model kang_stim_query.h5ad; done
