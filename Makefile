# The two commands the README names: `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
PYTEST_ARGS ?=

.PHONY: reproduce test venv lint lock benchmarks clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Whole workflow on the embedded synthetic benchmark (CPU, no data, no network).
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile workflow/profiles/default --cores $(CORES)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

benchmarks: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks

# Regenerate requirements.lock from the current .venv.
lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^retrievegan'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

clean-results:
	rm -rf results/synth
