# rnnlab: two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TORCH_VERSION)
RUN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format tensorboard dashboard bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: it takes the CPU wheel on disk; the package's own range then reuses it.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install rnnlab with its dev extras

run: install ## train the default task (arithmetic) on CPU and print predictions
	$(BIN)/python -m rnnlab accelerator=cpu $(RUN_ARGS)

test: install ## run the whole test suite
	$(BIN)/python -m pytest -q

test-fast: install ## the suite without the tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install ## ruff check + format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

tensorboard: install ## serve outputs/ on http://127.0.0.1:6006
	$(BIN)/tensorboard --logdir outputs --host 127.0.0.1 --port 6006

# STORAGE: a study database URL or a sweep dir; empty: the newest sweep under outputs/
STORAGE ?=
dashboard: install ## optuna-dashboard on a sweep's study, http://127.0.0.1:8080 (STORAGE=...)
	$(BIN)/python -m rnnlab.dashboard $(if $(STORAGE),storage=$(STORAGE))

BENCHMARKS := overhead addition_time_to_accuracy translate_bucketing translate_beam \
	scratch_cells insight_overhead

bench: install ## run the ratio benchmarks (not the 1.5 h BLEU budgets; see BENCHMARKS.md)
	for name in $(BENCHMARKS); do $(BIN)/python benchmarks/$$name.py || exit 1; done

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
