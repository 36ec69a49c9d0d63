# The two commands the README names: `make reproduce` and `make test` (`make test-fast` for the edit loop).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: reproduce table2-variants reference-docs verify test test-fast venv lint lock benchmarks clean-results dvc-pull dvc-push dvc-commit dvc-yaml

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

# Opt-in after `make reproduce`: Table 2's variant rows (soft / relaxed retrieval, L_occur as a mean; config `variants`).
TABLE2_VARIANTS ?= retrievegan_soft,retrievegan_relaxed,retrievegan_occur_mean
table2-variants: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile workflow/profiles/default --cores $(CORES) --config 'variants=[$(TABLE2_VARIANTS)]'

# After an opt-in run: store its outputs in docs/ stamped with the commit they were made at (retrievegan.refdocs).
# NAME: claims_full | claims_c1 | rarity | table2_variants; REFDOCS_ARGS=--run runs the reference's target first.
NAME ?=
REFDOCS_ARGS ?=
reference-docs: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m retrievegan.refdocs $(NAME) $(REFDOCS_ARGS)

# After `make reproduce`: hash every output and compare it with the reference run in dvc.lock, stage by
# stage (exit status 0 only when reproduced). VERIFY_ARGS: e.g. --rtol 1e-3 on another CPU type.
VERIFY_ARGS ?=
verify: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/retrievegan verify $(VERIFY_ARGS)

# Every test (what CI runs).
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit loop: every test not marked slow (end-to-end runs, training, browsers, daemons).
test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# ruff (lint rules and formatting: pyproject.toml [tool.ruff]) and Snakemake's linter on the workflow.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# BENCH_ARGS: e.g. --reference-run ../fresh-clone (where `make reproduce` ran; benchmarks/README.md).
benchmarks: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks $(BENCH_ARGS)

# DVC remote round trip (docs/scale.md). STAGES= limits to some dvc.yaml stages, e.g. STAGES=data.
# dvc-pull: dvc pull, hash the outputs against dvc.lock, snakemake --touch in DAG order (no re-runs).
dvc-pull: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m retrievegan.dvcsync pull $(STAGES)

# dvc-push: hash the cache objects against dvc.lock, dvc push, check the remote (dvc status -c).
dvc-push: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m retrievegan.dvcsync push $(STAGES)

# dvc-commit: record what Snakemake already produced in dvc.lock + cache (runs nothing, keeps mtimes) and
# copy its metrics and tables to reference-run/ (commit both: README, release checklist).
dvc-commit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m retrievegan.dvcsync commit $(STAGES)

# dvc-yaml: write dvc.yaml from its stage table (src/retrievegan/dvcstages.py) and the code's imports; run it
# after changing a stage, a rule file's stage or an import (tests/workflow/test_dvc_stages.py fails until then).
dvc-yaml: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m retrievegan.dvcsync yaml

# Regenerate requirements.lock from the current .venv.
lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^retrievegan'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

clean-results:
	rm -rf results/synth
