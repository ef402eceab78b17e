# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-matrix lint format bench clean prometheus

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/observer demo

test: $(STAMP)
	$(BIN)/ruff check agent observer tests bench tools
	$(BIN)/ruff format --check agent observer tests bench tools
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

# The whole suite on every supported CPython (3.10-3.15), one after another, then a
# table; VERSIONS="3.12 3.14" picks some, PYTEST_ARGS="-k gui" passes options to pytest,
# MATRIX_ALLOW_MISSING=1 lets a version with no interpreter pass. See tools/matrix.py.
test-matrix:
	$(PYTHON) tools/matrix.py $(if $(VERSIONS),--versions "$(VERSIONS)") $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

# Debian's prometheus + promtool for tests/test_prometheus.py (the tests call it themselves
# when they are missing; skipped with the reason where it cannot install).
prometheus:
	sh tools/install_prometheus.sh

lint: $(STAMP)
	$(BIN)/ruff check agent observer tests bench tools

format: $(STAMP)
	$(BIN)/ruff format agent observer tests bench tools
	$(BIN)/ruff check --fix agent observer tests bench tools

# The bench extra (aiohttp, aiomonitor, py-spy) is installed here only, never by `make test`.
# bench/overhead.py uses wrk when it is on PATH (Debian: apt-get install wrk), else a
# slower Python load generator, and says which.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/metrics.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/gui.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info .pytest_cache
