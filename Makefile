# One command each: `make run` (the service, demo mode), `make test` (the whole suite, lint included).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint fmt bench bench-service sysdeps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# zip/unzip/7-Zip are the reference tools the tests and benchmarks check against; openssl
# makes the TLS test's certificate.
sysdeps:
	@command -v zip >/dev/null && command -v unzip >/dev/null && command -v 7zz >/dev/null && \
	  command -v openssl >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq zip unzip 7zip openssl >/dev/null)

# The whole service on http://127.0.0.1:8000 with embedded Redis, a local worker, SQLite,
# a generated demo run and a demo user (credentials printed); data kept in ./data.
run: $(BIN)/.installed
	$(BIN)/runarchive serve --demo --data-dir data

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed sysdeps lint
	$(BIN)/pytest

fmt: $(BIN)/.installed
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(BIN)/.installed sysdeps
	$(BIN)/python -m bench.engine

# Service-level numbers (list latency, websocket fan-out, throughput, HTTP load with wrk).
bench-service: $(BIN)/.installed sysdeps
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench.service

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
