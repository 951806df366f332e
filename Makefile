# One Makefile for people and CI. Everything starts from plain python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The bench extra (matplotlib, SQLAlchemy, py-spy: ~250 MB) has a step of its own, so
# `make test` and `make run` never install it.
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: all venv bench-venv run test lint fmt typecheck pytest clean bench bench-deps bench-quick fuzz test-dqlite soak-keys

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint,examples,backup]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

venv: $(STAMP)

## bench-venv: add the bench extra (charts, SQLAlchemy, py-spy) to the venv
bench-venv: $(BENCH_STAMP)

## run: the daemon on data/app.db and the example app using it (PORT=8000 by default)
PORT ?= 8000
run: $(STAMP)
	$(BIN)/python examples/run.py --port $(PORT)

## test: lint, type checks and the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check fastquartdb tests examples bench
	$(BIN)/ruff format --check fastquartdb tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

## test-dqlite: the dqlite tests; a missing dqlite-demo fails instead of skipping
test-dqlite: $(STAMP)
	FQDB_REQUIRE_DQLITE=1 $(BIN)/pytest tests/dqlite

## bench: the benchmark suite (all scenarios, 3 interleaved repeats, ~9 min)
bench: $(BENCH_STAMP) bench-deps
	$(BIN)/python -m bench

## soak-keys: 10 minutes of 4x16 writers; do the request-key records stay bounded? (bench/results/soak-keys.md)
soak-keys: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak_keys --minutes 10

## bench-deps: wrk for S8/S9 and go-dqlite's dqlite-demo for D1 (Debian packages), installed when missing and we are root
bench-deps:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y wrk >/dev/null; } \
		|| echo "wrk is not installed (apt-get install -y wrk): the bench skips S8 and S9"
	@command -v dqlite-demo >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y go-dqlite >/dev/null; } \
		|| echo "dqlite-demo is not installed (apt-get install -y go-dqlite): the bench skips D1"

## bench-quick: the same code on tiny sizes (< 1 min); results in a git-ignored folder
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick --out bench/results/quick

## fuzz: a long protocol-fuzzing soak against a running daemon (FUZZ_MINUTES, default 30)
FUZZ_MINUTES ?= 30
fuzz: $(STAMP)
	$(BIN)/python -m tests.faults.fuzz_soak --minutes $(FUZZ_MINUTES)

fmt: $(STAMP)
	$(BIN)/ruff format fastquartdb tests examples bench
	$(BIN)/ruff check --fix fastquartdb tests examples bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
