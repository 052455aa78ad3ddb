# Agent Turbo: `make demo` runs the main job, `make test` the test suite.
# Both create .venv and install what they need on a machine with only Python and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-down test test-unit lint lint-imports bench faults clean browser-deps

# editable_mode=compat puts the checkout on sys.path with a plain .pth line: the
# default import-hook finder costs every Python start here ~25 ms (turbo, workers,
# tests). Plain -e if a setuptools to come drops that mode.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev,bench]' --config-settings editable_mode=compat \
		|| $(PIP) install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m celeryapp.dev.demo

demo-down: $(STAMP)
	$(PY) -m celeryapp.dev.demo --down

# The browser check of Flower needs Debian's chromium: installed here when we are
# root with apt-get (best effort: elsewhere that one test says why it is skipped).
test: $(STAMP)
	-@$(MAKE) --no-print-directory browser-deps
	-@$(MAKE) --no-print-directory agent-clis
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) tests/suite.py $(PYTEST_ARGS)

# The unit tests alone: no Redis, no Celery workers (real subprocesses, the agent CLIs and
# the warehouse stand-in, though: about a minute, in parallel).
test-unit: $(STAMP)
	$(PY) -m pytest -n $${TURBO_TEST_WORKERS:-4} tests/unit $(PYTEST_ARGS)

# The architecture contracts in pyproject.toml (one import direction; make test runs it too).
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

# ruff (pyproject.toml) and the architecture contracts: what `make test` checks first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m bench

# The fault campaign: kills and bad input against real Redis and workers (minutes; a fast
# subset runs in `make test`). Prints the table ops/RELIABILITY.md carries.
faults: $(STAMP)
	$(PY) -m faults

clean:
	rm -rf $(VENV) var build *.egg-info

# Headless Chromium for tests/system/test_browser.py (Debian's packages, no browser download).
# `make test` tries it first; where it cannot, that test is skipped with the reason.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "browser-deps: chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "browser-deps: needs root and apt-get; run as root (or with sudo):" >&2; \
		echo "  apt-get update && apt-get install -y chromium chromium-driver" >&2; \
		exit 1; \
	fi

# The real agent CLIs (claude, codex, gemini) at the versions pinned in
# tests/support/agent_clis.py, installed with npm into ~/.cache/agent-turbo/agent-clis for
# tests/unit/test_real_claude.py and tests/integration/test_real_claude_worker.py. `make test`
# tries it first (best effort: without node/npm or the registry those tests are skipped and
# say why).
.PHONY: agent-clis
agent-clis: $(STAMP)
	PYTHONPATH=tests $(PY) -m support.agent_clis install
