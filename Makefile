# The two commands the README names: `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: reproduce table2-variants verify test venv lint lock benchmarks clean-results dvc-pull dvc-push dvc-commit

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

# After `make reproduce`: hash every output and compare it with the reference run in dvc.lock, stage by
# stage (exit status 0 only when reproduced). VERIFY_ARGS: e.g. --rtol 1e-3 on another CPU type.
VERIFY_ARGS ?=
verify: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/retrievegan verify $(VERIFY_ARGS)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
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

# Regenerate requirements.lock from the current .venv.
lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^retrievegan'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

clean-results:
	rm -rf results/synth
