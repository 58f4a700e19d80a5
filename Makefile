# rrnet: every developer and user task is a target here. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
DEMO_OUT    ?= demo-output
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv build test test-rust test-python demo bench lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.created:
	$(PYTHON_BOOT) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip uv
	touch $@

$(VENV)/.deps: $(VENV)/.created pyproject.toml
	$(UV) pip install -q --python $(PY) -r pyproject.toml --extra dev --extra cluster
	touch $@

build: $(VENV)/.deps ## build the Rust extension (release) into the editable install
	$(VENV)/bin/maturin develop --release --uv -E dev,cluster -q

venv: build ## create .venv with uv (idempotent), install rrnet editable with dev extras

test-rust: ## Rust unit tests
	cargo test -p rrnet-core --release

test-python: venv ## Python test suite (pytest + hypothesis)
	$(PY) -m pytest

test: test-rust test-python ## the whole test suite, Rust and Python

demo: venv ## run the full pipeline on the embedded data set; writes $(DEMO_OUT)/
	$(PY) -m rrnet.demo --out $(DEMO_OUT)

bench: venv ## benchmark scripts (print ratios against a baseline in the same run)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: venv ## ruff, cargo clippy -D warnings, cargo fmt --check
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all --check

format: venv ## apply ruff format and cargo fmt
	$(VENV)/bin/ruff format python tests benchmarks
	$(VENV)/bin/ruff check --fix python tests benchmarks
	cargo fmt --all

clean: ## remove build outputs and the environment
	rm -rf target $(VENV) python/rrnet/_core*.so $(DEMO_OUT)
