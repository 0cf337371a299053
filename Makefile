# fiqa developer commands. The two set-up commands: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
RUN := PATH="$(abspath $(BIN)):$$PATH"
export NO_ALBUMENTATIONS_UPDATE := 1
export OPENCV_LOG_LEVEL := ERROR
# What fiqa.cli.allocator sets for fiqa's commands, for the tests' own processes too (pytest).
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 4294967296

.PHONY: help setup demo check test test-full test-gpu bench lint format params dvc-yaml

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/fiqa: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,dlib]'
	@touch $@

setup: $(BIN)/fiqa  ## create .venv and install fiqa with its dev tools

demo: setup  ## build the demo raw data and run the whole DVC pipeline on it
	$(RUN) fiqa demo-data --out data/raw
	$(RUN) dvc commit --force --quiet data.dvc   # records the hash of the (deterministic) build
	$(RUN) dvc repro
	@echo
	@echo "Results:"
	@echo "  labels         data/labels/labels.parquet (report: data/labels/report.json)"
	@echo "  quality model  models/quality.ckpt, models/quality.onnx"
	@echo "  evaluation     metrics/eval.json, reports/eval.md, reports/edc_*.png"
	@echo "  EDC plots      dvc plots diff   (against the committed baseline; offline: reports/eval.html)"
	@echo "  W&B runs       wandb/ (offline; 'wandb sync wandb/offline-run-*' to upload)"

check: setup  ## the fast tier of the tests (no slow or GPU tests): the inner loop, < 5 min
	$(RUN) pytest -m "not slow and not gpu" -q

test: setup  ## run the test suite (fast and slow tests, no GPU)
	$(RUN) pytest -m "not gpu" -q

test-full: setup  ## every test, GPU ones included when a GPU is present
	$(RUN) pytest -q

test-gpu: setup  ## the GPU tier alone (tests/test_gpu.py; skipped without CUDA)
	$(RUN) pytest -m gpu -q

bench: setup  ## print the benchmark figures
	$(RUN) python benchmarks/edc_speed.py
	$(RUN) python benchmarks/serfiq_cost.py
	$(RUN) python benchmarks/embedding_pipeline.py
	$(RUN) python benchmarks/label_scale.py
	$(RUN) python benchmarks/eval_matrix.py
	$(RUN) python benchmarks/shared_trunk.py
	$(RUN) python benchmarks/allocator.py
	$(RUN) python benchmarks/train_throughput.py
	$(RUN) python benchmarks/cached_training.py
	$(RUN) python benchmarks/diffiqa_cost.py
	$(RUN) python benchmarks/scoring_latency.py
	$(RUN) python benchmarks/recordio_read.py
	$(RUN) python benchmarks/prepare_throughput.py
	$(RUN) python benchmarks/prepare_memory.py
	$(RUN) OMP_NUM_THREADS=1 python benchmarks/ijb_scale.py

lint: setup  ## ruff check + format check, the layer contracts (import-linter), dvc.yaml fresh
	$(RUN) ruff check src tests benchmarks train.py
	$(RUN) ruff format --check src tests benchmarks train.py
	$(RUN) lint-imports
	$(RUN) fiqa dvc-yaml --check

format: setup  ## apply ruff format and safe fixes
	$(RUN) ruff check --fix src tests benchmarks train.py
	$(RUN) ruff format src tests benchmarks train.py

params: setup  ## regenerate params.yaml from conf/ (as DVC composes it)
	$(RUN) python -m fiqa.config.params_file

dvc-yaml: setup  ## regenerate dvc.yaml from the stage declarations and the stages' import closure
	$(RUN) fiqa dvc-yaml
