# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit install lock clean readme bench bench-full

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve the API on http://127.0.0.1:8000 with the embedded model.
run: $(STAMP)
	$(BIN)/jarvis-trio serve --host 127.0.0.1 --port 8000 --backend sim

## Lint, type-check and run the whole suite.
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check jarvis_trio tests benchmarks
	$(BIN)/ruff format --check jarvis_trio tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

## Quick benchmarks of both variants (under 3 min): prints the table, plots in build/benchmarks/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --profile quick --plots build/benchmarks

## Full benchmarks (about 10 min): writes docs/benchmarks.md and docs/img/benchmarks/*.png.
bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --profile full --markdown docs/benchmarks.md \
		--plots docs/img/benchmarks

## Regenerate README's configuration table from jarvis_trio/config.py.
readme: $(STAMP)
	$(BIN)/python -m jarvis_trio._readme README.md

## Re-pin constraints.txt from a fresh resolve (run after changing dependencies).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^jarvis-trio' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
