# Every target sets up its own virtual environment; `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU-only machines: take the CPU build of torch first so the range in pyproject does not pull a CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "torch==2.13.0"; fi
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/shopllm demo --out demo_out

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PIP) install -q --no-deps "recbole==1.2.1"
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo_out
