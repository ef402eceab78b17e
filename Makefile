# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/observer demo

test: $(STAMP)
	$(BIN)/ruff check agent observer tests bench
	$(BIN)/ruff format --check agent observer tests bench
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check agent observer tests bench

format: $(STAMP)
	$(BIN)/ruff format agent observer tests bench
	$(BIN)/ruff check --fix agent observer tests bench

bench: $(STAMP)
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/fleet.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/gui.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
