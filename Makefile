# The README's two set-up commands. Both create .venv if missing and install what they need.
#   make demo       train and evaluate on the embedded default (Omniglot), ~5 min on a 2-core CPU
#   make test       ruff + the fast test suite (CPU only, no network; a few minutes)
#   make test-slow  the end-to-end tests that train on the real Omniglot (minutes more; CI runs both)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# The shared Omniglot copy beside the checkout is the default data, unless UNSEEN_DATA is already set.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin UNSEEN_DATA), undefined)
ifneq ($(wildcard $(SHARED_DATA)),)
export UNSEEN_DATA := $(SHARED_DATA)
endif
endif

.PHONY: demo test test-slow lint install chromium

demo: $(VENV)/.installed
	$(BIN)/unseen train configs/omniglot/baseline.yaml

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks

install: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@ $(VENV)/.installed

# The page's browser test drives Debian's headless Chromium through chromedriver: installed when missing, wherever
# apt-get can (CI runs as root on Debian); elsewhere the test fails and says what to install.
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "no chromium/chromedriver and no root apt-get here: install them, or the browser test fails"; fi; \
	fi
