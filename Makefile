# The two commands of the README: `make demo` and `make test`.
# Everything installs into .venv, created when missing, with the tested set pinned
# by constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench install-core install-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Core only: numpy, pluggy, rich. The demo needs no framework.
$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

# Every backend and the test tools.
$(VENV)/.all: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e ".[all,test]"
	touch $@ $(VENV)/.core

install-core: $(VENV)/.core
install-all: $(VENV)/.all

demo: $(VENV)/.core
	$(BIN)/polyparam tour --backend numpy

test: $(VENV)/.all
	$(BIN)/python -m pytest

bench: $(VENV)/.all
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV)
