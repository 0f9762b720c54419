# One command each: `make run` (the service, demo mode), `make test` (the whole suite, lint included).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Absolute, so the service and the README's tour commands (which read RUNARCHIVE_DATA_DIR)
# act on the same data whatever directory they are typed in.
DATA_DIR ?= $(CURDIR)/data

.PHONY: run test lint fmt bench bench-inside bench-service bench-storage sysdeps clean

# `make run` needs the runtime only; the test and lint tools come with the dev extra.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# zip/unzip/7-Zip/bsdtar are the reference tools the tests and benchmarks check against; openssl
# makes the TLS test's certificate; Debian's Chromium is the browser the Playwright tests drive
# (never a downloaded one).
sysdeps:
	@command -v zip >/dev/null && command -v unzip >/dev/null && command -v 7zz >/dev/null && \
	  command -v bsdtar >/dev/null && command -v openssl >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq zip unzip 7zip libarchive-tools openssl chromium >/dev/null)

# The whole service on http://127.0.0.1:$(PORT) with embedded Redis, a local worker, SQLite,
# a generated demo run and a demo user (credentials printed); data kept in ./data.
run: $(BIN)/.installed
	RUNARCHIVE_DATA_DIR=$(DATA_DIR) $(BIN)/runarchive serve --demo --data-dir $(DATA_DIR) --port $(PORT)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed-dev sysdeps lint
	$(BIN)/pytest

fmt: $(BIN)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(BIN)/.installed-dev sysdeps
	$(BIN)/python -m bench.engine

# Issue 14's read side in the core: diff of 30,000 files, listing pages, one file of a 2 GiB archive.
bench-inside: $(BIN)/.installed-dev
	$(BIN)/python -m bench.inside

# Issue 15's prune and scrub throughput on the 2 GB benchmark run (built once, then reused).
bench-storage: $(BIN)/.installed-dev
	$(BIN)/python -m bench.storage

# Service-level numbers (list latency, websocket fan-out, throughput, HTTP load with wrk).
bench-service: $(BIN)/.installed-dev sysdeps
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench.service

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
