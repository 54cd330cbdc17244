# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The LiteLLM proxy of `make bench-peers`, in a venv of its own: its proxy extra's pins
# are not constraints.txt's, and it runs as a subprocess anyway.
PEERS_VENV  := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

CHROMIUM := /usr/bin/chromium
REDIS_SERVER := /usr/bin/redis-server

.PHONY: run test test-fast lint imports typecheck unit docs docs-serve install lock lock-peers clean \
	config-docs bench bench-full bench-peers bench-scaleout bench-instructions bench-steps bench-floor browser redis valgrind

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The `bench-peers` extra of pyproject.toml (litellm[proxy]), pinned by constraints-peers.txt.
$(PEERS_STAMP): pyproject.toml constraints-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -c constraints-peers.txt -e '.[bench-peers]'
	touch $(PEERS_STAMP)

## Serve the API on http://127.0.0.1:8000 with the embedded model. Another port:
## `make run PORT=8001` (or JARVIS_PORT=8001 in the environment; PORT wins).
run: $(STAMP)
	$(BIN)/jarvis-trio serve --backend sim --demo-tools $(if $(PORT),--port $(PORT))

## Lint, type-check, build the docs and run the whole suite (the browser tests need
## Debian's Chromium, the multi-worker tests Debian's redis-server).
test: $(STAMP) browser redis lint imports typecheck docs unit

## Debian's Chromium for the browser tests, with apt-get when it is missing (never a
## downloaded browser: Playwright drives /usr/bin/chromium).
browser:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-liberation; }
	@$(CHROMIUM) --version

## Debian's redis-server for the multi-worker tests, with apt-get when it is missing. The
## tests start their own instance on 127.0.0.1 and an ephemeral port; the package's own
## service is not needed.
redis:
	@test -x $(REDIS_SERVER) || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server; }
	@$(REDIS_SERVER) --version

lint: $(STAMP)
	$(BIN)/ruff check jarvis_trio tests benchmarks docs/examples docs/hooks.py
	$(BIN)/ruff format --check jarvis_trio tests benchmarks docs/examples docs/hooks.py

## What may import what (the contracts in pyproject.toml; CONTRIBUTING.md explains them).
imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict docs/hooks.py $(wildcard docs/examples/*.py)

unit: $(STAMP)
	$(BIN)/pytest

## The inner loop while editing: the suite without the Chromium, Redis and slow tests (no
## apt-get, no lint); the tests are in tests/<layer>/ (unit, trio, http, processes, browser).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not browser and not redis and not slow"

## Build the docs site into site/ (warnings are errors); the examples run in `make unit`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Serve the docs site with live reload on http://127.0.0.1:8001.
docs-serve: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

## Quick benchmarks of both variants (under 3 min): prints the table, plots in build/benchmarks/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --profile quick --plots build/benchmarks

## Full benchmarks (about 10 min): writes docs/benchmarks.md and docs/img/benchmarks/*.png.
bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --profile full --markdown docs/benchmarks.md \
		--plots docs/img/benchmarks

## jarvis-trio, the asyncio variant and the LiteLLM proxy side by side on the same simulator
## (a few minutes; installs the proxy into .venv-peers first if it is missing): writes the
## peer section of docs/benchmarks.md and docs/img/benchmarks/peers-*.png.
bench-peers: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python -m benchmarks.peers --markdown docs/benchmarks.md --plots docs/img/benchmarks

## Instructions per relayed token of both variants at 1 and 10 streams, counted by
## callgrind (the same code gives the same count to about 1 %, where CPU time swings by
## 20 % on a shared machine); about 3 min. Installs Debian's valgrind if it is missing.
bench-instructions: $(STAMP) valgrind
	$(BIN)/python -m benchmarks.instructions

## One request's time inside the gateway, step by step (and a supersede's); about 15 s.
bench-steps: $(STAMP)
	$(BIN)/python -m benchmarks.steps
	$(BIN)/python -m benchmarks.steps --supersede

## The stack's floor under the TTFT overhead: the gateway beside a minimal quart-trio app
## and a minimal ASGI app on the same server (hypercorn's trio worker); about 10 s.
bench-floor: $(STAMP)
	$(BIN)/python -m benchmarks.floor

valgrind:
	@command -v valgrind >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq valgrind; }

## Scale-out benchmark: tokens/s at -w 1 against -w 2 with the Redis registry, and
## cross-worker against same-worker handoff (real processes on loopback); writes
## docs/benchmarks-scaleout.md.
bench-scaleout: $(STAMP) redis
	$(BIN)/python -m benchmarks.scaleout --markdown docs/benchmarks-scaleout.md

## Regenerate the configuration table of docs/reference/configuration.md from
## jarvis_trio/config.py (the docs build fails while it is out of date).
config-docs: $(STAMP)
	$(BIN)/python -m jarvis_trio._config_docs docs/reference/configuration.md

## Re-pin constraints.txt from a fresh resolve (run after changing dependencies).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^jarvis-trio' > constraints.txt
	rm -rf .lockenv

## Re-pin constraints-peers.txt (the LiteLLM proxy's venv) from a fresh resolve.
lock-peers:
	rm -rf .lockenv-peers && $(PYTHON) -m venv .lockenv-peers
	.lockenv-peers/bin/pip install --quiet -e '.[bench-peers]'
	.lockenv-peers/bin/pip freeze --exclude-editable | grep -v '^jarvis-trio' > constraints-peers.txt
	rm -rf .lockenv-peers

clean:
	rm -rf $(VENV) $(PEERS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts site
