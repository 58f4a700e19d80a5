# rrnet: every developer and user task is a target here. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
DEMO_OUT    ?= demo-output
# SKIP_VENV=1: use an existing environment as it is (no install, no extension build),
# e.g. `make lint VENV=/path/to/shared/venv SKIP_VENV=1`.
SKIP_VENV   ?=
NEEDS_VENV  := $(if $(SKIP_VENV),,venv)
LOCKED_REQS := $(VENV)/requirements.lock.txt
RUST_SRC    := $(shell find crates -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv lock build test test-rust test-python demo bench lint lint-python lint-rust mypy-baseline format clean FORCE

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.created:
	$(PYTHON_BOOT) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip uv
	touch $@

# The dependencies come from uv.lock, pinned and hash-checked (`make lock` after editing
# the dependencies in pyproject.toml; `make lint` fails while the lock is stale).
$(VENV)/.deps: $(VENV)/.created uv.lock pyproject.toml
	$(UV) export -q --frozen --extra dev --extra cluster --no-emit-project -o $(LOCKED_REQS)
	$(UV) pip install -q --python $(PY) -r $(LOCKED_REQS)
	touch $@

# The extension is rebuilt only when the Rust sources or the dependencies changed.
$(VENV)/.built: $(VENV)/.deps $(RUST_SRC) $(if $(wildcard python/rrnet/_core*.so),,FORCE)
	$(VENV)/bin/maturin develop --release --uv -q
	touch $@

build: $(VENV)/.built ## build the Rust extension (release) into the editable install

venv: build ## create .venv from uv.lock (idempotent), install rrnet editable

lock: ## re-resolve uv.lock after a dependency change in pyproject.toml
	$(if $(wildcard $(UV)),$(UV),uv) lock

test-rust: ## Rust unit tests
	cargo test -p rrnet-core --release

test-python: $(NEEDS_VENV) ## Python test suite (pytest + hypothesis)
	$(PY) -m pytest

test: test-rust test-python ## the whole test suite, Rust and Python

demo: $(NEEDS_VENV) ## run the full pipeline on the embedded data set; writes $(DEMO_OUT)/
	$(PY) -m rrnet.demo --out $(DEMO_OUT)

bench: $(NEEDS_VENV) ## benchmark scripts (print ratios against a baseline in the same run)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: lint-python lint-rust ## ruff, ruff format, mypy (baseline), stubtest, clippy, cargo fmt, lock check

lint-python: $(NEEDS_VENV) ## ruff, ruff format --check, mypy against mypy-baseline.txt, stubtest of _core
	$(VENV)/bin/ruff check python tests benchmarks tools
	$(VENV)/bin/ruff format --check python tests benchmarks tools
	PYTHONPATH=$(CURDIR)/python $(PY) tools/check_mypy_baseline.py
	PYTHONPATH=$(CURDIR)/python $(PY) -m mypy.stubtest rrnet._core --allowlist tools/stubtest-allowlist.txt
	$(UV) lock --check

lint-rust: ## cargo clippy -D warnings, cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all --check

mypy-baseline: $(NEEDS_VENV) ## rewrite mypy-baseline.txt from today's mypy errors (it may only shrink)
	PYTHONPATH=$(CURDIR)/python $(PY) tools/check_mypy_baseline.py --update

format: $(NEEDS_VENV) ## apply ruff format and cargo fmt
	$(VENV)/bin/ruff format python tests benchmarks tools
	$(VENV)/bin/ruff check --fix python tests benchmarks tools
	cargo fmt --all

clean: ## remove build outputs and the environment
	rm -rf target $(VENV) python/rrnet/_core*.so $(DEMO_OUT)

FORCE:
