# Two commands for a newcomer (see README.md):
#   make demo   - set up .venv and run the built-in example (simulate, find, rank, draw)
#   make test   - set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ptolemy-installed
DEMO   ?= ptolemy-demo

.PHONY: demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch pinned in the set-up path only: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[all]"
	@touch $@

demo: $(STAMP)
	$(BIN)/ptolemy demo -o $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ptolemy_core ptolemy_leginon tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO)
