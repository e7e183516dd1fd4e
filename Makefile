# One command each, on a fresh machine: `make demo` trains the synthetic demo, `make test` runs
# the tests. Both create the virtual environment .venv and install into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install install-dev clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/python train.py --workdir=runs/demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 -q --durations=25 tests

# The sampler and train-step benchmarks, then the plot of every results file (CPU or GPU alike).
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/plot.py

clean:
	rm -rf $(VENV)
