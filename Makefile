# MnemoLite: `make run` starts everything locally, `make test` runs every check.
# Both create .venv and install the project on first use.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

.PHONY: help install run test lint unit bench clean
help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install MnemoLite with every extra

run: $(STAMP) ## start embedded PostgreSQL, the API on 127.0.0.1:8000 and the workers
	$(BIN)/mnemo up

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint ## every check and every test (what CI runs)
	$(BIN)/pytest

unit: $(STAMP) ## only the fast tests (no processes, no model)
	$(BIN)/pytest tests/unit

clean: ## remove the virtualenv and local data (.mnemolite)
	rm -rf $(VENV) .mnemolite .pytest_cache .mypy_cache .ruff_cache
