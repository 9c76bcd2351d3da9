# multidb: everyday commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: uv
uv: ## Install uv with pip when it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

.PHONY: sync
sync: uv ## Create .venv from uv.lock (every workspace member, dev tools)
	@$(UV) sync --locked --quiet

.PHONY: run
run: sync ## Start the local stack: embedded PostgreSQL, migrations, four services, gateway
	@$(UV) run --locked multidb up

.PHONY: test
test: sync ## Run the whole test suite (starts its own embedded PostgreSQL)
	@$(UV) run --locked pytest $(PYTEST_ARGS)

.PHONY: migrate
migrate: sync ## Migrate every configured role to head (ROLES="a b" for some; see multidb migrate -h)
	@$(UV) run --locked multidb migrate $(ROLES)

.PHONY: secrets
secrets: ## docker compose: one random password per database in ./secrets/ (made once, kept)
	@umask 077 && mkdir -p secrets && chmod 0700 secrets && for role in default analytics logging archive; do \
		file=secrets/db-$$role-password; \
		[ -s $$file ] || python3 -c "import secrets; print(secrets.token_urlsafe(32))" > $$file; \
		chmod 0644 $$file; \
	done

.PHONY: up
up: secrets ## docker compose: the multi-server stack (needs a Docker engine, API_KEYS and JWT_SECRET)
	docker compose --profile multi-db up -d --build

.PHONY: down
down: ## docker compose: stop the multi-server stack
	API_KEYS=$${API_KEYS:-unused} JWT_SECRET=$${JWT_SECRET:-unused} docker compose --profile multi-db down

.PHONY: bench
bench: sync ## Gateway vs direct service figures, make run's time to ready, metrics scaling and vs postgres_exporter, TLS cost, backup vs bare pg_dump, ingestion and log/rollup queries, archiving vs bare COPY, split of a 1 GB monolith, read throughput with a streaming replica and the cost of routing a read to it (prints targets)
	@$(UV) run --locked python bench/fleet_bench.py
	@$(UV) run --locked python bench/startup_bench.py
	@$(UV) run --locked python bench/metrics_bench.py
	@$(UV) run --locked python bench/tls_bench.py
	@$(UV) run --locked python bench/backup_bench.py
	@$(UV) run --locked python bench/ingest_bench.py
	@$(UV) run --locked python bench/archive_bench.py
	@$(UV) run --locked python bench/split_bench.py
	@$(UV) run --locked python bench/replica_bench.py

.PHONY: lint
lint: sync ## ruff (lint + format check) and mypy
	@$(UV) run --locked ruff check .
	@$(UV) run --locked ruff format --check .
	@$(UV) run --locked mypy shared/src services/*/src gateway/src devstack/src tests bench

.PHONY: fmt
fmt: sync ## Format and autofix
	@$(UV) run --locked ruff format .
	@$(UV) run --locked ruff check --fix .

.PHONY: clean
clean: ## Remove the virtualenv, caches and local data (.data/)
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .data
