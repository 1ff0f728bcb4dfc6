# `make run` and `make test` are all a fresh machine needs (Python 3.11+).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# torch is pinned in the engine extra; an unpinned torch would pull several GB of CUDA wheels.
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# make run [PORT=8081] [HOST=0.0.0.0] [CONFIG=my.yaml]: read from make's command line only, because HOST and
# PORT are often set in the environment for other programs (tcsh exports HOST, for one).
cli_opt  = $(if $(filter command line,$(origin $(1))),--$(2) $($(1)))
RUN_ARGS = $(call cli_opt,CONFIG,config) $(call cli_opt,HOST,host) $(call cli_opt,PORT,port)

# `make smoke` installs what `make run` installs into its own venv and drives it from outside (CI runs it).
SMOKE_VENV ?= .venv-smoke

.PHONY: run test test-slow smoke lint bench screenshots clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml | $(PY)
	@echo "Installing frugalserve and the built-in engine into $(VENV) (a few minutes the first time)..."
	$(PIP) install --progress-bar off -e '.[engine,ui]' 2>&1 | grep --line-buffered -v "^WARNING: Location\|^Requirement already satisfied" || true
	$(PY) -c "import frugalserve, torch, transformers, gradio" && touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	@echo "Installing frugalserve with the engine and test tools into $(VENV) (a few minutes the first time)..."
	$(PIP) install --progress-bar off -e '.[engine,ui,dev]' 2>&1 | grep --line-buffered -v "^WARNING: Location\|^Requirement already satisfied" || true
	$(PY) -c "import frugalserve, torch, transformers, gradio, pytest, openai, playwright" && touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(VENV)/bin/frugalserve up $(strip $(RUN_ARGS))

# `make test` stays under 10 minutes on a 2-core machine; the slow tests (Ray clusters, long replays against
# real gateways) run in `make test-slow`, which CI runs too.
test: $(STAMP_TEST)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP_TEST)
	$(PY) -m pytest -q -m slow

smoke: $(STAMP_TEST)
	$(MAKE) --no-print-directory VENV=$(SMOKE_VENV) $(SMOKE_VENV)/.installed-run
	$(PY) tests/smoke.py $(SMOKE_VENV)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# The README's pictures of the web UI, taken by its browser tests (Debian's chromium: apt-get install chromium).
screenshots: $(STAMP_TEST)
	FRUGALSERVE_SCREENSHOTS=$(CURDIR)/docs/img $(PY) -m pytest -q tests/ui/test_browser.py

bench: $(STAMP_TEST)
	$(PY) benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) $(SMOKE_VENV) build *.egg-info src/*.egg-info .pytest_cache
