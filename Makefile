# Two entry points for a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv and run the whole demo DAG (synthetic cohorts -> Table 1)
#   make setup  both environments (.venv and Clinica's .venv-convert, for raw downloads)
#   make demo-paper   then the reduced `paper` target on the same cohorts (Tables 2, 3, Figures 3-5)
#   make test   set up .venv and run the test suite
PYTHON ?= python3.11
VENV ?= .venv
# Clinica's converters (convert stage, raw downloads) get an environment of their own.
CONVERT_VENV ?= .venv-convert
CORES ?= all
BIN := $(VENV)/bin

.PHONY: setup demo demo-paper test

setup: $(VENV)/.installed $(CONVERT_VENV)/.installed

# torch is installed first, pinned, so that no dependency pulls a multi-GB CUDA build on CPU
# machines; on a GPU machine the same pin resolves to PyPI's CUDA wheel.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(CONVERT_VENV)/.installed: envs/convert-requirements.txt
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet --upgrade pip
	$(CONVERT_VENV)/bin/pip install --quiet -r envs/convert-requirements.txt
	touch $@

# The demo's cohorts are synthetic NIfTI: it needs no Clinica, so it sets up .venv alone (the
# raw-download overlay config/demo-raw.yaml and the tests need `make setup`).
demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) --configfile=config/demo.yaml
	@echo "Table 1: results/report/table1.md"
	@cat results/report/table1.md

# Every row of Tables 2 and 3 with few epochs (config/demo-paper.yaml), reusing the demo's cohorts.
demo-paper: $(VENV)/.installed
	$(BIN)/snakemake paper --cores $(CORES) --configfile config/demo.yaml config/demo-paper.yaml
	@echo "Tables 2 and 3, Figures 3-5: results/report/"
	@cat results/report/table2.md results/report/table3.md

test: setup
	$(BIN)/python -m pytest
