# make install | run | test | lint | bench — see README.md.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
# Python 3.13 where available (pyenv, then PATH; a pyenv shim that cannot run it is
# skipped), else the default python3 if it is at least 3.11.
PYTHON ?= $(shell for p in $$HOME/.pyenv/versions/3.13*/bin/python3.13 python3.13 python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 \
	&& { command -v "$$p"; break; }; done)
STAMP := $(VENV)/.installed

.PHONY: install ocr-model run test lint typecheck services bench clean compose-smoke

install: $(STAMP) ocr-model

# Tesseract's English model for reading collector lines (Debian's tesseract-ocr-eng, with
# apt-get when missing and running as root; the engine comes with the tesserocr wheel).
ocr-model:
	@bash scripts/install-ocr-model.sh

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

run: install
	$(PY) -m app

# The whole suite: lint, types, then tests against real PostgreSQL and Redis on loopback
# (started, or installed with apt-get when missing and running as root; otherwise those
# tests are skipped and pytest says why).
test: install lint
	@source scripts/test-services.sh && $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

services:
	@bash scripts/test-services.sh

# The benchmarks of bench/ (docs/benchmarks.md), each `python -m bench.<name>`:
# recognition on ../shared/eval (ours vs legacy: bench.eval), then photos rendered from every
# catalogued scan at 4 card heights (bench.renders), then with 4 synthetic reprints of every
# photographed card (printing decisions, collector lines read: bench.eval --reprints, i.e.
# bench.printings), then the collector line on photos rendered from the real scans by card
# height (reading accuracy, exact printing among twins: bench.collector_line), then the
# catalogue-scale benchmark (bench.eval --scale, i.e. bench.scale: the eval
# catalogue + SCALE synthetic printings each with the real reprint structure, twins 0.52:
# 1,493 is a REFRESH_SETS-sized catalogue of 2,213; legacy at 10,000; each with its twins and
# renders; `make bench SCALE="1493 10000 100000"` for the whole catalogue, ~2 h more), the
# rendered photos again against the eval
# catalogue + its first 10,000 synthetic printings (~25-40 min to build that bundle the first
# time, cached in data/bench-renders), then the service under load and hot swaps
# (bench.service), then catalogue ingest speed (bench.ingest). Those that read ../shared skip
# with a message without it. Results also go to bench-results/*.json.
SCALE ?= 1493 10000
bench: install
	$(PY) -m bench.eval
	$(PY) -m bench.renders
	$(PY) -m bench.eval --reprints 4
	$(PY) -m bench.collector_line
	$(PY) -m bench.eval $(foreach n,$(SCALE),--scale $(n))
	$(PY) -m bench.renders --distractors 10000 --workers 1
	$(PY) -m bench.service
	@source scripts/test-services.sh && $(PY) -m bench.ingest

# Starts the real compose deployment (build, up, checks, down -v): not part of `make test`.
# Needs Docker with Compose v2 (here: ../shared/tools/compose-standins.sh) and ../shared;
# skips with a message without them. See deploy/compose_smoke.py.
compose-smoke: install
	$(PY) deploy/compose_smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
