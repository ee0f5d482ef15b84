SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# `make test` must run its steps in order and stop at the first failure.
.NOTPARALLEL:

VENV := .venv
VENV_STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

# Interpreter used to create the venvs. Empty means: the first of python3.11,
# python3.12, python3.13, python3.14, python3 that is >= 3.11 (3.11 is what CI
# and constraints.txt target). Override with `make PYTHON=/path/to/python3.x`.
PYTHON ?=
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k health"
PYTEST_ARGS ?=
# Extra environment and flags for the pip calls of `make lock` (e.g. an index).
LOCK_PIP_ENV ?=
LOCK_PIP_FLAGS ?=

LINT_DIRS := $(wildcard src tests bench examples)

# Shell snippet: sets $py to a Python >= 3.11 or fails with a clear message.
define find_python
py='$(PYTHON)'; \
if [[ -z "$$py" ]]; then \
  for c in python3.11 python3.12 python3.13 python3.14 python3; do \
    if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then py=$$c; break; fi; \
  done; \
fi; \
if [[ -z "$$py" ]] || ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
  echo "error: bastion needs Python >= 3.11, but no suitable interpreter was found" \
       "(PYTHON='$(PYTHON)', python3 is $$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo missing))." \
       "Install python3.11 or run: make PYTHON=/path/to/python3.11 ..." >&2; \
  exit 1; \
fi
endef

.PHONY: help $(VENV) run system-deps lint typecheck pytest test faults scan lock clean bench bench-deps profile

help:
	@echo "make run           serve bastion on 127.0.0.1:8000 (data in ./.bastion)"
	@echo "make test          system-deps, venv, lint, typecheck, pytest (stops at first failure)"
	@echo "make system-deps   check/install PostgreSQL, Redis, Chromium, nginx (scripts/system-deps.sh)"
	@echo "make .venv         create .venv and install -e '.[dev]' pinned by constraints.txt"
	@echo "make lint          ruff check"
	@echo "make typecheck     mypy (config in pyproject.toml)"
	@echo "make pytest        pytest -n 2, incl. browser tests; PYTEST_ARGS=... to pass more"
	@echo "make faults        the whole fault suite (tests/faults) three times in a row; not in make test"
	@echo "make scan          deep schemathesis runs (SQLite and PostgreSQL) and sqlmap on every query"
	@echo "                   and path parameter (~10 min, offline; not part of make test)"
	@echo "make lock          regenerate constraints.txt from a clean venv"
	@echo "make bench         every target of docs/performance.md, side by side (~10 min;"
	@echo "                   not part of make test); BENCH_ARGS=... for bench/run.py"
	@echo "make profile       py-spy profile of a worker under /auth/me and /health/live load"
	@echo "make screenshots   retake docs/images/console.png with the console's browser test"
	@echo "make clean         remove .venv and caches (keeps ./.bastion)"

$(VENV): $(VENV_STAMP)

# Rebuilt whenever pyproject.toml or constraints.txt change. A .venv whose
# python is older than 3.11 (or broken) is recreated from scratch.
$(VENV_STAMP): pyproject.toml constraints.txt
	@$(find_python); \
	if ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  echo "$$py -m venv $(VENV)"; \
	  "$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $@

run: $(VENV_STAMP)
	$(BIN)/bastion serve

system-deps:
	bash scripts/system-deps.sh

lint: $(VENV_STAMP)
	$(BIN)/ruff check $(LINT_DIRS)

typecheck: $(VENV_STAMP)
	$(BIN)/mypy

pytest: $(VENV_STAMP)
	$(BIN)/pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

test: system-deps $(VENV_STAMP) lint typecheck pytest

# The whole fault suite (make test runs its reduced form): kill -9, SIGTERM, PostgreSQL and
# Redis outages, full disks, slow clients and key rotation across two hosts, each checked
# against the fault table of docs/operations.md. "Passes" means three runs in a row.
FAULT_RUNS ?= 3

faults: system-deps $(VENV_STAMP)
	for run in $$(seq 1 $(FAULT_RUNS)); do \
	  echo "== fault suite, run $$run of $(FAULT_RUNS)"; \
	  BASTION_FAULTS=full $(BIN)/pytest -n 2 -p no:cacheprovider tests/faults $(PYTEST_ARGS); \
	done

# The scanners' deep runs (tests/scanners; make test runs their quick form): schemathesis
# with many more examples for a fixed time, on SQLite and on PostgreSQL, as a user with a BOLA
# peer, as the admin and on the session-ending operations; and sqlmap on every query and path
# parameter of the OpenAPI document. Everything comes from .venv and the system packages that
# make test installed, and talks to servers on the loopback only: it runs offline. Each scan
# target ends with one line in the "scanners" summary; any finding fails the run.
scan: system-deps $(VENV_STAMP)
	SCAN_DEPTH=deep $(BIN)/pytest -n 2 -p no:cacheprovider tests/scanners $(PYTEST_ARGS)

# The benchmark: system tools (wrk, taskset, PostgreSQL) and bench/requirements.txt
# (py-spy) installed into .venv for the bench only, never as runtime dependencies;
# the fastapi-users peer's packages into .venv-peers (below).
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

bench-deps:
	bash scripts/bench-deps.sh

$(BENCH_STAMP): $(VENV_STAMP) bench/requirements.txt
	$(BIN)/pip install -r bench/requirements.txt
	touch $@

# The fastapi-users peer runs from its own venv (bench/peers-requirements.txt says why it
# cannot share .venv). Best effort: when the install fails, bench.run skips the peer and
# prints why, and the next `make bench` tries again.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): bench/peers-requirements.txt
	@$(find_python); \
	if { [[ -x $(PEERS_VENV)/bin/python ]] || "$$py" -m venv $(PEERS_VENV); } \
	   && $(PEERS_VENV)/bin/pip install --disable-pip-version-check -q -r bench/peers-requirements.txt; then \
	  touch $@; \
	else \
	  echo "bench: installing $(PEERS_VENV) from bench/peers-requirements.txt failed;" \
	       "the fastapi-users peer will be skipped" >&2; \
	fi

bench: bench-deps $(BENCH_STAMP) $(PEERS_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

profile: bench-deps $(BENCH_STAMP)
	$(BIN)/python -m bench.profile

# Pins every package `pip install -e '.[dev]'` pulls in, resolved in a fresh
# venv (python3.11 preferred, see PYTHON above). Editable so no build/ is left
# behind; --exclude-editable (and the grep, belt and braces) drop bastion itself.
lock:
	@$(find_python); \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "resolving '.[dev]' with $$py in a clean venv ($$tmp)"; \
	"$$py" -m venv "$$tmp/venv"; \
	$(LOCK_PIP_ENV) "$$tmp/venv/bin/python" -m pip install $(LOCK_PIP_FLAGS) --quiet --upgrade pip; \
	$(LOCK_PIP_ENV) "$$tmp/venv/bin/python" -m pip install $(LOCK_PIP_FLAGS) --quiet -e '.[dev]'; \
	{ \
	  echo "# Exact pins for everything \`pip install -e '.[dev]'\` installs (runtime + dev)."; \
	  echo "# Generated by \`make lock\` from a clean venv, Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')."; \
	  echo "# Do not edit by hand: change pyproject.toml, then run \`make lock\`."; \
	  echo "# Used as: pip install -c constraints.txt -e '.[dev]'  (see \`make .venv\`)"; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -viE '^bastion([=@ ]|$$)'; \
	} > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; \
	echo "wrote constraints.txt ($$(grep -vc '^#' constraints.txt) pins)"

# Removes the venv, tool caches and build output. Deliberately does NOT remove
# ./.bastion: it holds the user's data (the SQLite database served by `make run`).
clean:
	rm -rf $(VENV) .venv-peers .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov build dist
	rm -rf src/*.egg-info
	$(if $(LINT_DIRS),find $(LINT_DIRS) -type d -name __pycache__ -prune -exec rm -rf {} +)

# The console's picture for the docs (docs/images/console.png), taken by its browser test
# against a live server; `make test` writes it to a tmp dir instead.
.PHONY: screenshots
screenshots: system-deps $(VENV_STAMP)
	BASTION_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -p no:cacheprovider \
	  tests/e2e/test_console_browser.py::test_screenshot_of_the_notes_list $(PYTEST_ARGS)
