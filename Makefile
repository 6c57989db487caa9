# The two commands of the README: `make demo` and `make test`.
# Everything installs into .venv, created when missing, with the tested set pinned
# by constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint docs bench install-core install-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Core only: numpy, pluggy, rich. The demo needs no framework.
$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

# Every backend, the test and docs tools, and the example third-party plugin
# (examples/polyparam_jax: its own package, found through its entry point).
$(VENV)/.all: $(BIN)/python pyproject.toml constraints.txt examples/polyparam_jax/pyproject.toml
	$(PIP) -e ".[all,test,docs]"
	$(PIP) -e examples/polyparam_jax
	touch $@ $(VENV)/.core

install-core: $(VENV)/.core
install-all: $(VENV)/.all

demo: $(VENV)/.core
	$(BIN)/polyparam tour --backend numpy

# The docs run every example on every backend (docs/_hooks/execute.py); a warning fails the build.
docs: $(VENV)/.all
	$(BIN)/mkdocs build --strict

# The habits the code assumes: ruff (lint) and mypy (types), configured in pyproject.toml.
lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/mypy

test: docs lint
	$(BIN)/python -m pytest

bench: $(VENV)/.all
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV)
