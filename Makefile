# The two commands of the README:
#   make book   set-up, offline data, every chapter under the `book` profile, html in _build/html
#   make test   set-up, offline data, chromium (when root), unit tests, nbval + results regression (smoke baseline),
#               book build check
# Every target installs only what is missing: a second `make` costs seconds.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= book
ONLY ?=
export DCGAN_DATA ?= $(CURDIR)/data
# uv, when we install it with pip --user, lands here
export PATH := $(HOME)/.local/bin:$(PATH)

STAMP := $(VENV)/.dcgan-installed
ONLY_ARG := $(if $(ONLY),--only $(ONLY),)

.PHONY: help setup data browser book test unit nbval book-check nbval-baseline regression-calibrate lock clean-book reference

help:
	@echo "make book            set up, fetch the data, execute every chapter (PROFILE=$(PROFILE)), render _build/html"
	@echo "make test            set up, fetch the data, unit tests, nbval and results regression against tests/notebooks, book build check"
	@echo "make setup | data | browser | unit | nbval | book-check"
	@echo "make nbval-baseline [ONLY=02_training]   re-execute chapters under smoke into tests/notebooks/"
	@echo "make regression-calibrate [ONLY=02_training]   calibrate the results regression (after nbval-baseline)"
	@echo "make lock            re-resolve requirements.lock from pyproject.toml"
	@echo "make reference       train the quality gate's reference runs (2x the book's epochs, 3 seeds) into dcgan/gate_references.json"

# ---------------------------------------------------------------- environment

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v uv >/dev/null || { echo "installing uv with pip"; \
	  python3 -m pip --version >/dev/null 2>&1 || { test "$$(id -u)" = 0 && apt-get install -y -q python3-pip; }; \
	  python3 -m pip install --user -q uv 2>/dev/null || python3 -m pip install --user -q --break-system-packages uv; }
	@test -x $(PY) || uv venv $(VENV) --python $(PYTHON_VERSION) --prompt dcgan
	@# the package itself, editable and without dependencies, next to the locked ones
	@echo "-e $(CURDIR)" > $(VENV)/dcgan-editable.txt
	@# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile torch's
	@# thousands of modules again at import (10-20 s of CPU per chapter, test run and notebook kernel)
	uv pip sync --compile-bytecode --python $(PY) requirements.lock $(VENV)/dcgan-editable.txt
	@# papermill and nbval start the notebooks' `python3` kernel; it must be this venv's Python
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(PY) -c "import ipykernel, os, sys; from jupyter_client.kernelspec \
	  import KernelSpecManager as K; d = os.path.realpath(K().get_kernel_spec('python3').resource_dir); \
	  assert d.startswith(os.path.realpath(sys.prefix)), d"
	@touch $@

lock:
	uv pip compile pyproject.toml --all-extras --universal --python-version $(PYTHON_VERSION) -o requirements.lock -q --no-header

# ---------------------------------------------------------------- data

# the offline sets, and onnxruntime-web (npm, pinned, checksummed) for chapter 11's explorer
data:
	python3 scripts/fetch_data.py --dest "$(DCGAN_DATA)"

# Debian's chromium and chromedriver for the explorer's browser test (tests/test_explorer.py skips without them)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get) for the explorer's browser test"; \
	  apt-get update -q >/dev/null; apt-get install -y -q chromium chromium-driver >/dev/null; \
	else echo "note: chromium or chromedriver missing and not root: the explorer's browser test will skip" \
	  "(run \`make browser\` as root, or apt-get install chromium chromium-driver)"; fi

# ---------------------------------------------------------------- the book

book: setup data
	$(PY) -m dcgan book --profile $(PROFILE) --keep-going $(ONLY_ARG)

# trains in a fresh runs folder, as `make nbval` and CI do: a model cached by an earlier run (other code,
# other thread count) would give numbers a fresh machine cannot reproduce
nbval-baseline: setup data
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	DCGAN_RUNS="$$tmp/runs" $(PY) -m dcgan book --profile smoke --out tests/notebooks --no-build $(ONLY_ARG)

# the quality gate's thresholds: each book model trained twice as long from 3 seeds the book never trains (needs a clean tree)
reference: setup data
	$(PY) -m dcgan reference --profile $(PROFILE)

clean-book:
	rm -rf _build book/*.ipynb book/*.results.json book/results.md

# ---------------------------------------------------------------- tests

# runs all three parts even when one fails, then reports each one's time and status
test: setup data browser
	@fail=""; summary=""; \
	for part in unit nbval book-check; do \
	  t0=$$(date +%s); \
	  if $(MAKE) --no-print-directory $$part; then st=ok; else st=FAILED; fail="$$fail $$part"; fi; \
	  summary="$$summary $$part $$(( $$(date +%s) - t0 )) s ($$st),"; \
	done; \
	echo "make test:$${summary%,}"; \
	if [ -n "$$fail" ]; then echo "make test failed:$$fail"; exit 1; fi

# one worker per core (pytest-xdist), each on one thread (tests/conftest.py). --dist worksteal: an idle worker takes
# queued tests from a busy one, so the minutes-long tests (collected first, tests/conftest.py) do not leave one worker
# idle at the end (609 tests, AMD EPYC, 2026-12-06: 770 s with the default --dist load, 486 s with worksteal)
unit: setup
	$(PY) -m pytest tests -q -p no:cacheprovider -n auto --dist worksteal

# re-executes the smoke baseline; outputs and results go to a temporary folder, never book/.
# Then the results regression (dcgan/regression.py): every number the chapters recorded is checked against the
# committed tests/notebooks/*.results.json by the class tests/notebooks/regression.json gives it: computed from
# fixed inputs -> exactly, on every machine; trained -> within bounds calibrated over runs on other CPU kernels
# and seeds; timing -> skipped. It prints the results that moved, their check and both sides' hardware.
# Fresh runs folder (as on a new machine: nothing cached); one notebook per worker, each kernel on one thread
# (setup_chapter), so two chapters run side by side; a chapter that needs another's model waits on its lock.
NBVAL_WORKERS ?= 2
nbval: setup
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; st=0; \
	DCGAN_RESULTS_DIR="$$tmp" DCGAN_RUNS="$$tmp/runs" $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
	  --nbval-current-env --nbval-cell-timeout=600 -n $(NBVAL_WORKERS) --dist loadfile tests/notebooks || st=1; \
	$(PY) -m dcgan.regression check tests/notebooks "$$tmp" || st=1; \
	exit $$st

# the regression's calibration: the smoke chapters again under other CPU kernels and another seed (a few minutes
# a variant); run it after `make nbval-baseline` (same ONLY=) and commit tests/notebooks/regression.json
regression-calibrate: setup data
	$(PY) -m dcgan.regression calibrate tests/notebooks $(ONLY_ARG)

# builds the html from the smoke baseline in a temporary folder (book/ and _build/ are not touched)
book-check: setup
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp tests/notebooks/*.ipynb tests/notebooks/*.results.json "$$tmp"/ 2>/dev/null || true; \
	$(PY) -m dcgan book --no-execute --out "$$tmp" > "$$tmp/build.log" 2>&1 || { tail -50 "$$tmp/build.log"; exit 1; }; \
	test -f "$$tmp/_build/html/index.html"; echo "book build check passed"
