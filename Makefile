# Every target that needs Python makes .venv itself; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
# checkov pins its own boto3 (1.35), which moto and Powertools here outgrew: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# `sam build` for the python3.13 runtime needs a python3.13 on PATH; pyenv keeps one here.
PY313_DIR := $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin))
export PATH := $(if $(PY313_DIR),$(PY313_DIR):,)$(PATH)
export SAM_CLI_TELEMETRY := 0

FN ?= ReceiverFunction
EVENT ?= events/activities_fully_synced.json

.PHONY: help venv sam-venv checkov-venv test lint typecheck demo dev invoke events bench load build validate redrive sandbox clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
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

venv: $(VENV)/.installed ## Create .venv with everything the tests and tools need

sam-venv: $(SAM_VENV)/.installed ## Create .venv-sam with the SAM CLI (it pins its own boto3)

checkov-venv: $(CHECKOV_VENV)/.installed ## Create .venv-checkov with checkov (it pins its own boto3)

test: venv sam-venv checkov-venv lint ## Run the whole suite: lint, unit, integration, template, end-to-end
	SAM_CLI=$(abspath $(SAM)) CHECKOV=$(abspath $(CHECKOV)) $(PY) -m pytest

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/shared functions argyle_sandbox argyle_ops local_stack

typecheck: lint

demo: venv ## Run the pipeline locally on the samples in events/ and print what happened
	$(PY) -m local_stack.demo

dev: venv ## Start the local stack (moto server, receiver over HTTP, sync poller) until Ctrl-C
	$(PY) -m local_stack.dev

invoke: venv ## Run FN on EVENT in-process against moto (no Docker): make invoke FN=ReceiverFunction EVENT=events/x.json
	$(PY) -m local_stack.invoke $(FN) $(EVENT)

events: venv ## Regenerate and re-sign the samples in events/
	$(PY) scripts/make_events.py

bench: venv ## Benchmarks: receiver cold start and warm path, sync throughput
	$(PY) -m bench

build: sam-venv ## sam build (needs python3.13 on PATH)
	$(SAM) build

validate: sam-venv ## sam validate --lint
	$(SAM) validate --lint

load: venv ## A bounded burst of signed webhooks at the local stack: accepted/s, drain time, nothing lost
	$(PY) -m bench.load_run $(ARGS)

redrive: venv ## Move DLQ messages back to the queue: make redrive ARGS="--endpoint-url ..."
	$(PY) -m argyle_ops.redrive $(ARGS)

sandbox: venv ## Run the Argyle sandbox on loopback
	$(PY) -m argyle_sandbox $(ARGS)

clean: ## Remove build output and virtual environments
	rm -rf .aws-sam $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache
