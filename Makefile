# One entry point for set-up, tests, lint, demo and benchmarks. Each target creates
# the virtual environment it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_HOME ?= .codetape/demo
DEMO_ARGS ?=
IMAGE ?= $(or $(CODETAPE_IMAGE),codetape/python:bookworm)
IMAGE_PACKAGES ?= python3-numpy,python3-pil
PYTEST_ARGS ?=

.PHONY: help venv test lint format demo bench image clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv with codetape and its dev tools

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff check, ruff format --check, mypy --strict (src and tests)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests examples bench
	$(BIN)/ruff format src tests examples bench

demo: $(STAMP)  ## record the orders agent, replay its failing step, diff, open the viewer
	@rm -rf $(DEMO_HOME)
	CODETAPE_IMAGE=$(IMAGE) $(BIN)/python examples/demo.py --home $(DEMO_HOME) $(DEMO_ARGS)

bench: $(STAMP)  ## run the benchmarks (results go to BENCHMARKS.md by hand)
	$(BIN)/python bench/overhead.py
	CODETAPE_IMAGE=$(IMAGE) $(BIN)/python bench/sandbox.py
	CODETAPE_IMAGE=$(IMAGE) $(BIN)/python bench/fidelity.py

image:  ## build the offline sandbox image, with numpy and PIL as CI has it (no registry needed)
	scripts/build-offline-image.sh --include $(IMAGE_PACKAGES) $(IMAGE)

clean:  ## remove the venv and local stores
	rm -rf $(VENV) .codetape .pytest_cache .mypy_cache .ruff_cache
