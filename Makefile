# The two commands of the README: `make demo` and `make test`.
# Everything installs into .venv, created when missing, with the tested set pinned
# by constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint docs bench install-core install-all install-current clean

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

# The current set (numpy 2, TensorFlow 2.21, JAX 0.10, Flax NNX; no MXNet) in its own venv,
# pinned by constraints-current.txt. `make test` runs the suite in both sets.
CURRENT := .venv-current
CBIN := $(CURRENT)/bin
CPIP := $(CBIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-current.txt

$(CBIN)/python:
	$(PYTHON) -m venv $(CURRENT)

$(CURRENT)/.all: $(CBIN)/python pyproject.toml constraints-current.txt examples/polyparam_jax/pyproject.toml
	$(CPIP) -e ".[torch,keras,flax,plot,test]"
	$(CPIP) -e examples/polyparam_jax
	touch $@

install-core: $(VENV)/.core
install-all: $(VENV)/.all
install-current: $(CURRENT)/.all

demo: $(VENV)/.core
	$(BIN)/polyparam tour --backend numpy

# The docs run every example on every backend (docs/_hooks/execute.py); a warning fails the build.
docs: $(VENV)/.all $(CURRENT)/.all
	$(BIN)/mkdocs build --strict

# The habits the code assumes: ruff (lint) and mypy (types), configured in pyproject.toml.
lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/mypy

# Both tested sets; in the current one, a DeprecationWarning from polyparam's own modules is an error.
test: docs lint $(CURRENT)/.all
	$(BIN)/python -m pytest
	$(CBIN)/python -m pytest -W "error::DeprecationWarning:polyparam"

# Flax NNX is in the current set only: its zoo runs there.
bench: $(VENV)/.all $(CURRENT)/.all
	$(BIN)/python benchmarks/run.py
	$(CBIN)/python benchmarks/bench_zoo.py --backend flax

clean:
	rm -rf $(VENV) $(CURRENT)
