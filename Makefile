# The two commands a newcomer needs: `make up` (serve the demo) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install up test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

up: install  ## seed demo models on first run, start Ray and serve on :8000 until Ctrl-C
	$(BIN)/serve-app up

test: install  ## the whole suite: unit, e2e, integration and deployment checks
	$(BIN)/ruff check serve_app tests benchmarks
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .serve-app
