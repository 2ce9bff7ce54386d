# The two commands a fresh machine needs. Both are idempotent.
#   make run   the main job: the daemon (sqlite file, process replicas) with an example package
#              deployed, an event and a cron trigger firing; Ctrl-C stops it
#   make test  installs what the tests need, then lint, types and the whole test suite; brings
#              Docker up first where it can (scripts/docker-up.sh), else the Docker tests skip
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run example test install install-dev bench bench-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'

run: install
	$(BIN)/python -m examples.daemon_demo

example: install
	$(BIN)/python -m examples.quickstart

test: install-dev
	$(BIN)/ruff check triggerfish tests bench examples
	$(BIN)/ruff format --check triggerfish tests bench examples
	$(BIN)/mypy
	-bash scripts/docker-up.sh
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/throughput.py

# triggerfish beside Celery, Ray and APScheduler (installs them in bench/peers/.venv, starts
# redis-server and a Celery worker, stops them); results in bench/results/peers.*
bench-peers: install
	$(BIN)/python bench/peers/run.py
