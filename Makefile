# The verbs people type. Each target is a thin wrapper over the real command; `make help` lists them.
# Every target installs what is missing first, so any of them works as the first command on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

# Machines without internet keep a copy of MNIST beside the checkout (../shared/data/mnist);
# use it when present, unless DIGITREC_MNIST_DIR is already set. Elsewhere MNIST is downloaded.
export DIGITREC_MNIST_DIR ?= $(wildcard $(abspath ../shared/data/mnist))

.DEFAULT_GOAL := help
.PHONY: help install data train eval sweep experiments search sweep-report test test-fast bench bench-search bench-smoke bench-time bench-gpu tensorboard mlflow lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[dev,onnx,serve,mlflow,wandb,postgres]"
	touch $@

install: $(VENV)/.installed data ## create .venv, install digitrec and its dependencies, get MNIST

data: $(VENV)/.installed ## download (or find) MNIST and verify its checksums
	$(BIN)/digitrec data

train: install ## train the default model (extra overrides: make train ARGS="model.optimizer.lr=3e-4")
	$(BIN)/digitrec train $(ARGS)

eval: install ## evaluate a checkpoint: make eval CKPT=outputs/train/runs/<run>/checkpoints/last.ckpt
	$(BIN)/digitrec eval ckpt_path=$(CKPT) $(ARGS)

sweep: install ## a sweep, then its summary: make sweep ARGS="model.optimizer.lr=1e-3,3e-4 data.batch_size=64,128"
	$(BIN)/digitrec train -m $(ARGS)

experiments: install ## train every config in configs/experiment/, then a summary comparing them
	$(BIN)/digitrec train -m 'experiment=glob(*)' $(ARGS)

search: install ## the Optuna search; run it again to continue it (longer: ARGS="hydra.sweeper.n_trials=40")
	$(BIN)/digitrec train hparams_search=optuna $(ARGS)

sweep-report: $(VENV)/.installed ## a past sweep's summary again (the newest without DIR): make sweep-report DIR=outputs/train/multiruns/<sweep>
	$(BIN)/digitrec sweep-report $(DIR)

lint: $(VENV)/.installed ## ruff (lint, formatting) and import-linter (what each part of the package may import; pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The browser test of `digitrec serve`'s page (a slow test) drives Debian's chromium through Playwright's
# executable_path: installed with apt-get when missing, never a browser downloaded by Playwright.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make: $(CHROMIUM) is missing (the browser test of digitrec serve needs it): install it with 'sudo apt-get install chromium', then run make test again" >&2; exit 1; fi

# The tests of searches on many machines start a real PostgreSQL server of their own (tests/conftest.py,
# postgres_server): Debian's postgresql, installed with apt-get when missing.
.PHONY: postgresql
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "make: PostgreSQL is missing (the tests of searches on many machines start a server of their own): install it with 'sudo apt-get install postgresql', then run make test again" >&2; exit 1; fi

test: install $(CHROMIUM) postgresql ## run the whole test suite (the slow end-to-end tests too)
	$(BIN)/python -m pytest $(ARGS)

test-fast: install ## run the fast tests only
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# The benchmark's default is the issue's: 3 interleaved rounds of 5 epochs, then the scaling runs (about 8 minutes on 2 cores).
ROUNDS ?= 3
EPOCHS ?= 5

bench: $(VENV)/.installed ## time digitrec against plain PyTorch loops into benchmarks/results/ (quicker: make bench ROUNDS=1 EPOCHS=2)
	$(BIN)/python -m benchmarks.bench --rounds $(ROUNDS) --epochs $(EPOCHS) $(ARGS)

# SEED: one seed for every recipe; RECIPES: which (default tutorial speedrun cnn mlp_augmented).
SEED ?= 12345
RECIPES ?= default tutorial speedrun cnn mlp_augmented
bench-time: $(VENV)/.installed ## time to accuracy: val/acc against wall time and the test point per recipe, plot and table into benchmarks/results/ (about 36 min on 2 cores, cnn 13.5 and mlp_augmented 21 of them; RECIPES="default speedrun" about 2 min)
	$(BIN)/python -m benchmarks.time_to_accuracy $(foreach r,$(RECIPES),--recipe $(r)) --seed $(SEED) $(ARGS)

bench-gpu: $(VENV)/.installed ## the speed figures on an NVIDIA GPU (benchmarks/gpu.sh): time to accuracy and epoch time into benchmarks/results/gpu/
	PYTHON=$(BIN)/python bash benchmarks/gpu.sh

bench-search: $(VENV)/.installed postgresql ## a 20-trial Optuna search on 1 vs 2 workers on one PostgreSQL, and the storages' cost per trial (about 3 min)
	$(BIN)/python -m benchmarks.search_workers $(ARGS)

bench-smoke: $(VENV)/.installed ## the benchmark on a tiny setting, into a temp folder: checks that it runs, measures nothing
	$(BIN)/python -m benchmarks.bench --smoke $(ARGS)

.PHONY: serve bench-serve bench-handwriting
serve: install ## the draw-a-digit page and HTTP API on http://127.0.0.1:8000/ (options: make serve ARGS="--ckpt PATH --port 8001")
	$(BIN)/digitrec serve $(ARGS)

bench-serve: $(VENV)/.installed ## load on `digitrec serve`: 1, 8, 32 clients, req/s, latency, RSS, cold start (a trained model: make train)
	$(BIN)/python -m benchmarks.serve_load $(ARGS)

# CKPT: the model(s) to fine-tune, e.g. CKPT=outputs/train/runs/<run>/model.ckpt (several: ARGS="--ckpt OTHER").
bench-handwriting: $(VENV)/.installed ## fine-tuning on a writer-shift folder, before/after for N = 10, 30, 100 images per digit (1-2 min a model; CKPT=...)
	$(BIN)/python -m benchmarks.handwriting --ckpt $(CKPT) $(ARGS)

# LOGDIR=<a sweep's directory>: only its jobs, named by job number and what differs.
LOGDIR ?= outputs

tensorboard: $(VENV)/.installed ## TensorBoard over every run in outputs/ (or LOGDIR=...), on http://127.0.0.1:6006
	$(BIN)/tensorboard --logdir $(LOGDIR) --host 127.0.0.1 --port 6006

# One worker is plenty on this machine (MLflow's default of 4 takes ~25 s to start); the one deprecation
# warning printed per worker (MLflow's own use of starlette.middleware.wsgi) is nothing a user can act on: silenced.
mlflow: $(VENV)/.installed ## the MLflow UI over the runs of logger=mlflow (outputs/mlflow.db), on http://127.0.0.1:5000
	MLFLOW_DISABLE_TELEMETRY=true PYTHONWARNINGS='ignore:starlette.middleware.wsgi is deprecated' $(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

clean: ## remove caches and build files (never outputs/ or data/)
	rm -rf .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
