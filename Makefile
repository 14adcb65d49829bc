# The two commands of the README. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Install and run the main job: the seed ETL flow on embedded SQLite/DuckDB.
demo: $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[etl]"
	$(PY) examples/etl/flow.py

# Install everything and run the whole test suite.
test: $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[all]"
	$(PY) -m pytest $(PYTEST_ARGS)
