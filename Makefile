# Entry points: make run | demo | test | lint | docs | bench | chaos. Each installs what it needs first.
SHELL := /bin/bash
# Python 3.13, the version Bicep deploys: from 3.13 Azure runs the worker version requirements.txt pins, so the
# local stack runs the same worker bytes. Found on PATH or in pyenv; override with `make PYTHON=...`.
PYTHON_VERSION := 3.13
PYTHON ?= $(shell for p in python$(PYTHON_VERSION) $$HOME/.pyenv/versions/$(PYTHON_VERSION)*/bin/python$(PYTHON_VERSION) \
  /usr/local/bin/python$(PYTHON_VERSION) /usr/bin/python$(PYTHON_VERSION); do \
  "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(PYTHON_VERSION))))' 2>/dev/null \
  && { echo "$$p"; break; }; done)
comma := ,
VENV ?= .venv
PY := $(VENV)/bin/python
STATE ?= .devstack
DEPS_STAMP := $(VENV)/.deps-stamp
NODE_STAMP := node_modules/.package-lock.json
INFRA_VENV ?= .venv-infra
# checkov is a tool, not the app: it keeps the machine's default Python.
INFRA_PYTHON ?= python3
INFRA_STAMP := $(INFRA_VENV)/.deps-stamp

.PHONY: install infra-tools browser run demo test unit lint docs security chaos stack-up stack-down stack-status clean

# The FunctionRpc protos the stand-in host speaks to the worker with: generated code shipped in
# azure-functions-runtime-v1's wheel as a top-level `tests.protos` package, so installed apart (--target)
# and loaded under another name by devstack/harness/worker.py.
WORKER_PROTOS := azure-functions-runtime-v1==1.2.0

$(DEPS_STAMP): requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "Python $(PYTHON_VERSION) not found: install it (pyenv install $(PYTHON_VERSION)) or run make PYTHON=/path/to/python$(PYTHON_VERSION)"; exit 1; }
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(PYTHON_VERSION))))'; then \
	  echo "$(VENV) is not Python $(PYTHON_VERSION): rebuilding it"; rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --upgrade --target $(VENV)/worker-protos $(WORKER_PROTOS)
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(INFRA_STAMP): requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(INFRA_PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-infra.txt
	@touch $@

install: $(DEPS_STAMP) $(NODE_STAMP)

infra-tools: $(INFRA_STAMP)

## Debian's Chromium for the real-browser connect test (Playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium (apt-get install chromium) to run the browser test"; fi; }

## The app on the local stack, processing events until Ctrl-C.
run: install
	$(PY) -m devstack.run --state-dir $(STATE)

## Send sample appointments and print the join URLs that arrive.
demo: install
	$(PY) -m devstack.demo --state-dir $(STATE)

## Everything: lint, type-check, unit, functional, end-to-end and infrastructure tests.
## The infrastructure checks fail (rather than skip) when a tool is missing.
## In CI (CI=true) the browser test must run rather than skip.
test: install infra-tools browser lint docs security
	CHECKOV=$(INFRA_VENV)/bin/checkov INFRA_TOOLS_REQUIRED=1 BROWSER_REQUIRED=$(if $(filter true,$(CI)),1,0) \
	  $(PY) -m pytest

unit: install
	$(PY) -m pytest -m "unit or functional"

## ruff format owns the files listed in pyproject.toml ([tool.va-join-links] formatted), not yet the whole tree.
FORMATTED = $(shell $(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['va-join-links']['formatted']))")

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check $(FORMATTED)
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

## The docs site: the generated reference is current (tools/gen_reference.py), then mkdocs builds it strictly.
docs: install
	$(PY) tools/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

## Performance figures and their baselines (docs/performance.md); a few minutes, separate from the tests.
bench: install
	$(PY) -m bench

## Security checks (also part of `make test`): bandit finds no high-severity issue in the app code, and
## pip-audit no known vulnerability in requirements.txt (required in CI; skipped with a warning offline).
security: install
	$(PY) tools/security.py

## Conservation run: 2,000 events through three instances under Graph and webhook faults, duplicates and
## malformed events, kill -9s, a storage pause and a kill inside a token refresh, 40 appointments that end during
## the run (their attendance told); prints the ledgers and fails unless lost=0 duplicate_deliveries=0
## wrongly_disconnected=0 attendance_wrong=0. `make chaos CHAOS_ARGS="--heavy"` for more.
## It uses free ports, but run it as `flock /tmp/devstack-fixed-ports.lock make chaos` on a shared machine.
chaos: install
	$(PY) -m chaos $(CHAOS_ARGS)

stack-up: install
	$(PY) -m devstack up --state-dir $(STATE)

stack-down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down --state-dir $(STATE); fi

stack-status: install
	$(PY) -m devstack status --state-dir $(STATE)

clean: stack-down
	rm -rf $(VENV) $(INFRA_VENV) node_modules $(STATE) .pytest_cache .mypy_cache .ruff_cache .site
