# The README's and the docs' commands. Everything runs from a virtualenv in .venv built from the pinned locks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install env demo test lint typecheck test-unit test-integration test-e2e airflow psql stop clean lock bench dags redis-server \
	chromium screenshots docs

# Bytecode is compiled at install: every Airflow task is a fresh process, and with
# PYTHONDONTWRITEBYTECODE=1 (set here and in many images) it would recompile scikit-learn, SciPy
# and pandas from source each time (import sklearn 5.9 s -> 1.9 s, measured).
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q include dags plugins
	touch $(STAMP)

# The Compose specification's JSON schema for the compose-file test (a wheel's data file, not installed).
COMPOSE_SPEC := $(VENV)/share/compose-spec/.downloaded
$(COMPOSE_SPEC): requirements-compose-spec.txt | $(STAMP)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
	  -r requirements-compose-spec.txt -d $(VENV)/share/compose-spec
	touch $(COMPOSE_SPEC)

install: $(STAMP) $(COMPOSE_SPEC) ## create .venv with the pinned dependencies

env: $(STAMP)                     ## write .env for docker compose with fresh secrets (never replaces one: FORCE=1 does)
	$(BIN)/python -m batchscore compose-env $(if $(FORCE),--force)

demo: $(STAMP)                    ## the whole job end to end on the embedded PostgreSQL + a real Airflow
	$(BIN)/python -m batchscore demo

# The Celery tests run a real Redis broker: Debian's redis-server, installed here when missing (as root).
redis-server:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } || \
	  { echo "the Celery tests need redis-server: sudo apt-get install redis-server"; exit 1; }

# The UI tests drive Debian's chromium (headless, through Playwright's executable_path): installed here
# when missing (as root); no browser is ever downloaded from elsewhere.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "the browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; }

# Every test target reports its slowest tests (setup, call and teardown each), so every CI log
# shows where the suite's time goes; skips and failures are summarised by -ra (pyproject's addopts).
DURATIONS := --durations=40

test: $(STAMP) $(COMPOSE_SPEC) redis-server chromium lint typecheck     ## the whole test suite (lint, types, unit, docs, integration, Airflow, end to end)
	$(BIN)/python -m pytest tests $(DURATIONS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test-unit: $(STAMP) $(COMPOSE_SPEC) ## no services: unit tests, the DAG integrity tests, the docs site built --strict
	$(BIN)/python -m pytest tests/unit tests/dags tests/docs $(DURATIONS)

test-integration: $(STAMP)         ## the engine and dag.test() on the embedded PostgreSQL
	$(BIN)/python -m pytest tests/integration tests/airflow $(DURATIONS)

test-e2e: $(STAMP) redis-server chromium   ## a real scheduler, dag-processor and API server; Celery workers
	$(BIN)/python -m pytest tests/e2e $(DURATIONS)

screenshots: $(STAMP) chromium    ## regenerate the docs' UI pictures (docs/img) with a real browser on the test stack
	BATCHSCORE_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/python -m pytest tests/e2e/test_ui_browser.py

docs: $(STAMP)                    ## serve the documentation site on http://127.0.0.1:8000 (live reload)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

airflow: $(STAMP)                 ## start the Airflow UI + scheduler on the local stack (background)
	$(BIN)/python -m batchscore airflow up

dags: $(STAMP)                    ## write one DAG file per include/pipelines/*.yaml (after adding or removing one)
	$(BIN)/python -m batchscore dags sync

psql: $(STAMP)                    ## SQL shell on the scores database (ROLE=warehouse for the source)
	$(BIN)/python -m batchscore db psql --role $(or $(ROLE),scores)

stop:                             ## stop the local Airflow services and PostgreSQL
	$(BIN)/python -m batchscore db stop

clean: stop                       ## stop everything and delete .local (database, models, staging)
	rm -rf .local

bench: $(STAMP)                   ## benchmark the engine against hand-written paths (BENCH_ARGS="--rows 2000000 --skip-naive")
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

lock:                             ## re-pin requirements*.lock after editing requirements*.txt
	$(BIN)/uv pip compile requirements.txt -o requirements.lock --python-version 3.11 -q
	$(BIN)/uv pip compile requirements.txt requirements-dev.txt -c requirements.lock -o requirements-dev.lock --python-version 3.11 -q
	$(BIN)/uv pip compile requirements-mlflow-server.txt -o requirements-mlflow-server.lock --python-version 3.11 -q
