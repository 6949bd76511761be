# Set-up is idempotent: the venv is (re)built only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,trackers,docs]'
	touch $(STAMP)

setup: $(STAMP)

## demo: train on the bundled example, print the per-class table, predict two photos
demo: setup
	rm -rf runs/demo
	$(BIN)/transferlab train examples/ahe-mini --out runs/demo
	$(BIN)/transferlab predict runs/demo examples/samples/capitol-dome.jpg examples/samples/pantheon-dome-interior.jpg

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## docs: the documentation site into build/site, offline; --strict: a broken reference fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

## test: lint, type-check, the docs and the whole test suite, notebooks included (what CI runs)
test: lint docs
	bash scripts/system-deps.sh
	$(BIN)/pytest

clean:
	rm -rf runs build/site .pytest_cache .mypy_cache .ruff_cache
