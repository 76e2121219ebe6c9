# Every target that needs Python makes .venv itself; `make demo` and `make test` work on a fresh machine.
# The tools' exit codes are in docs/runbook.md; make itself exits 2 when a tool fails.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Python that makes .venv: `python3` on your PATH (3.11 or newer), or the one you name, e.g.
# `make venv PYTHON=python3.13`. Its version is printed when .venv is made.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
# checkov pins its own boto3 (1.35), which moto and Powertools here outgrew: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# Only `sam build` needs the functions' runtime (python3.13) on PATH; pyenv may keep one here.
PY313_DIR := $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin))
export SAM_CLI_TELEMETRY := 0

FN ?= ReceiverFunction
EVENT ?= events/activities_fully_synced.json

.PHONY: help venv sam-venv checkov-venv test lint typecheck demo dev invoke events bench mutate load build validate redrive sandbox clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

# An existing .venv keeps its Python (`make clean venv PYTHON=...` makes it again with another).
$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "make: $(PYTHON) is \
	not Python 3.11 or newer ($$($(PYTHON) --version 2>&1)): name one, e.g. make venv PYTHON=python3.12" >&2; exit 1; }; \
	  echo "creating $(VENV) with $$($(PYTHON) -c 'import sys; print(sys.executable)') \
	(Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'))"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv with everything the tests and tools need (PYTHON=... to choose)
	@echo "$(VENV) uses Python $$($(PY) -c 'import platform; print(platform.python_version())')"

sam-venv: $(SAM_VENV)/.installed ## Create .venv-sam with the SAM CLI (it pins its own boto3)

checkov-venv: $(CHECKOV_VENV)/.installed ## Create .venv-checkov with checkov (it pins its own boto3)

# The suite runs on TEST_WORKERS processes (pytest-xdist): each has its own moto server and ports.
TEST_WORKERS ?= 2

test: venv sam-venv checkov-venv lint ## Run the whole suite: lint, unit, integration, template, end-to-end (TEST_WORKERS=2)
	SAM_CLI=$(abspath $(SAM)) CHECKOV=$(abspath $(CHECKOV)) $(PY) -m pytest -n $(TEST_WORKERS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/shared functions argyle_sandbox argyle_ops local_stack mutation

typecheck: lint

demo: venv ## The whole pipeline locally against the Argyle sandbox (faults, duplicates), checked exactly
	$(PY) -m local_stack.demo

dev: venv ## The local stack (moto, receiver over HTTP, sync, sandbox) until Ctrl-C; ports: MOTO_PORT...
	$(PY) -m local_stack.dev

invoke: venv ## Run FN on EVENT in-process (moto; the sync against a sandbox): make invoke FN=SyncFunction EVENT=events/sqs_activities_added.json
	$(PY) -m local_stack.invoke $(FN) $(EVENT) $(ARGS)

events: venv ## Regenerate and re-sign the samples in events/
	$(PY) scripts/make_events.py

bench: venv ## Benchmarks: receiver cold start and warm path, sync throughput, reconcile, freshness, load
	$(PY) -m bench

build: sam-venv ## sam build (needs python3.13 on PATH, or pyenv's)
	PATH="$(if $(PY313_DIR),$(PY313_DIR):,)$$PATH" $(SAM) build

validate: sam-venv ## sam validate --lint
	$(SAM) validate --lint

mutate: venv ## Mutation testing of the critical files (about an hour, resumable): make mutate ARGS="--minutes 30"
	$(PY) -m mutation $(ARGS)

load: venv ## A bounded burst of signed webhooks at the local stack: accepted/s, drain time, nothing lost
	$(PY) -m bench.load_run $(ARGS)

redrive: venv ## Move DLQ messages back to the queue: make redrive ARGS="--stack-name argyle-activity-sync"
	$(PY) -m argyle_ops.redrive $(ARGS)

sandbox: venv ## Run the Argyle sandbox on loopback
	$(PY) -m argyle_sandbox $(ARGS)

clean: ## Remove build output and virtual environments
	rm -rf .aws-sam $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache
