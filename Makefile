# rlserve — common tasks. Every target creates/reuses the local virtualenv in .venv.
# The two README commands are `make demo` (main job) and `make test` (whole suite).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: on these machines `pip install torch==2.13.0` is a local CPU build;
# installing the project first would let pip pick a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint format typecheck pytest reliability bench clean help

help:
	@echo "make demo       set up .venv and run the main job"
	@echo "make test       set up .venv with dev extras and run lint, type check and all test tiers"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make format     ruff format + ruff check --fix"
	@echo "make typecheck  mypy"
	@echo "make pytest     pytest only (all tiers, 2 workers then the serial tests); PYTEST_MARK=... / PYTEST_ARGS=... to narrow"
	@echo "make reliability  the reliability suite only (also part of make test)"
	@echo "make bench      run the benchmarks in bench/ (with an SB3 yardstick in .venv-bench)"
	@echo "make clean      remove .venv and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "rlserve needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The workstation set-up includes the `bench` extra (aiohttp, for `rlserve bench`); a serving
# image installs the core only (docker/install.sh).
# Stamp files make both set-ups idempotent: a second run reuses the venv and only
# reinstalls when pyproject.toml changed.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# The main job: train PPO on CartPole until solved, export it, serve it, query it, evaluate it.
demo: $(VENV)/.installed
	$(BIN)/rlserve demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Two phases: every test not marked serial on PYTEST_WORKERS processes (a test file stays on
# one worker, so its module fixtures start once), then the serial ones (the reliability suite,
# overload timings) alone: they must not compete with another test for the CPU.
# PYTEST_MARK narrows both phases (e.g. PYTEST_MARK="not learning"); a phase left with no test
# (pytest's exit status 5) is not a failure.
PYTEST_WORKERS ?= 2
PYTEST_MARK ?=
_and_mark = $(if $(PYTEST_MARK),($(PYTEST_MARK)) and ,)
pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "$(_and_mark)not serial" \
		$(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m "$(_and_mark)serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test: lint typecheck pytest

# The reliability suite alone (it is part of `make test` too): bad input, schemathesis, slow
# clients, overload, kills, signals, listeners.
reliability: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)

# The SB3 yardstick lives in its own virtualenv: it is never a project dependency.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BENCH_VENV)/bin/python -m pip install --quiet "stable-baselines3==2.9.*" "gymnasium>=1.0,<2"
	@touch $@

bench: $(VENV)/.installed-dev $(BENCH_VENV)/.installed
	$(BIN)/python bench/train_cartpole.py --sb3-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/train_pendulum.py --sb3-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/train_impala.py
	$(BIN)/python bench/train_lstm.py
	$(BIN)/python bench/train_multi_agent.py
	$(BIN)/python bench/slow_env.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/session_load.py
	$(BIN)/python bench/serve_lstm.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
