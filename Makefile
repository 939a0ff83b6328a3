# Quick start: `make demo` then `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= a teal coupe crossing a desert at noon

.PHONY: demo test bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/videobot generate "$(PROMPT)" --pipeline local --seconds 4

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

# The real `videobot run` killed with SIGKILL 20 times per pipeline (bench/chaos.py).
chaos: $(VENV)/.installed-test
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) data .pytest_cache
