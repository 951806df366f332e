# One Makefile for people and CI. Everything starts from plain python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv run test lint fmt typecheck pytest clean bench bench-quick

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint,examples,bench]'
	touch $(STAMP)

venv: $(STAMP)

## run: the daemon on data/app.db and the example app using it
run: $(STAMP)
	$(BIN)/python examples/run.py

## test: lint, type checks and the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check fastquartdb tests examples bench
	$(BIN)/ruff format --check fastquartdb tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

fmt: $(STAMP)
	$(BIN)/ruff format fastquartdb tests examples bench
	$(BIN)/ruff check --fix fastquartdb tests examples bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
