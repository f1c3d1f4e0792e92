# liverank — the two commands are `make demo` and `make test`; everything else builds on `install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LIVERANK := $(BIN)/liverank

.PHONY: install services services-down lint format test test-unit test-integration demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	@echo "installing liverank and its dev extra into $(VENV) (first time: torch and its CUDA-capable wheels, a few minutes)"
	$(BIN)/python -m pip install --progress-bar off -e '.[dev,bench]'
	@touch $(STAMP)

services: install
	$(LIVERANK) services up

services-down: install
	$(LIVERANK) services down

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy features snapshots trainer streams scorer liverank deploy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install services lint
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit features

test-integration: services
	$(BIN)/pytest -m integration

demo: install services
	$(LIVERANK) demo

clean:
	-$(LIVERANK) services down
	rm -rf $(VENV) .liverank .pytest_cache .mypy_cache .ruff_cache
