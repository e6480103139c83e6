# mnist-pipeline: every target works on a fresh clone; `make install` is a prerequisite of the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TensorFlow build: the CUDA one when an NVIDIA GPU answers, else the (much smaller) CPU-only one.
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
DATA_DIR ?=
OUTPUT_DIR ?= outputs
EPOCHS ?=
SUBSET ?=
TRAIN_FLAGS = $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SUBSET),--set data.subset=$(SUBSET)) $(ARGS)

.PHONY: help install test test-all lint smoke train-mlp train-deep-mlp train-cnn clean distclean

help:
	@echo "make install          create $(VENV) and install mnist-pipeline[$(TF_EXTRA),dev]"
	@echo "make test             run the test suite (no network, nothing outside the repo)"
	@echo "make lint             ruff"
	@echo "make smoke            tiny CNN run on a subset (set DATA_DIR= or MNIST_DATA_DIR)"
	@echo "make train-mlp | train-deep-mlp | train-cnn   [DATA_DIR=... EPOCHS=... SUBSET=... ARGS=...]"
	@echo "make clean            remove caches and build files (never outputs/); distclean also removes $(VENV)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(TF_EXTRA),dev]"
	@touch $@

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check mnist_pipeline tests

smoke: install
	$(BIN)/mnist train --config configs/smoke.yaml $(TRAIN_FLAGS)

train-mlp: install
	$(BIN)/mnist train --config configs/mlp.yaml $(TRAIN_FLAGS)

train-deep-mlp: install
	$(BIN)/mnist train --config configs/deep_mlp.yaml $(TRAIN_FLAGS)

train-cnn: install
	$(BIN)/mnist train --config configs/cnn.yaml $(TRAIN_FLAGS)

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
