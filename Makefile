# mnist-pipeline: every target works on a fresh clone; `make install` is a prerequisite of the rest.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TensorFlow build: the CUDA one when an NVIDIA GPU answers, else the (much smaller) CPU-only one.
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
DATA_DIR ?=
OUTPUT_DIR ?= outputs
EPOCHS ?=
SUBSET ?=
COMPARE ?= mlp deep_mlp cnn
# Debian's full Fashion-MNIST: apt-get install dataset-fashion-mnist
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
TRAIN_FLAGS = $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SUBSET),--set data.subset=$(SUBSET)) $(ARGS)
SWEEP_FLAGS = $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR) \
	$(if $(EPOCHS),--set training.epochs=$(EPOCHS)) $(if $(SUBSET),--set data.subset=$(SUBSET)) $(ARGS)

.PHONY: help install test test-fast lint smoke tensorboard serve sweep sweep-smoke train-mlp train-deep-mlp train-cnn compare compare-fashion report diagnose bench clean distclean \
	study study-perceptron study-quickstart study-softmax study-vanishing study-fitting study-regularization study-ensemble \
	study-augmentation

help:
	@echo "make install          create $(VENV) and install mnist-pipeline[$(TF_EXTRA),export,dev]"
	@echo "make test             run the test suite on every core (no network, nothing outside the repo)"
	@echo "make test-fast        the suite without the end-to-end checks marked slow: the edit-test loop"
	@echo "make lint             ruff"
	@echo "make smoke            tiny CNN run on a subset (set DATA_DIR= or MNIST_DATA_DIR)"
	@echo "make train-mlp | train-deep-mlp | train-cnn   [DATA_DIR=... EPOCHS=... SUBSET=... ARGS=...]"
	@echo "make compare          train mlp, deep_mlp and cnn (same variables), then compare the three runs"
	@echo "make compare-fashion  the same with the *_fashion configs on Fashion-MNIST (FASHION_DIR=$(FASHION_DIR))"
	@echo "make report RUN=outputs/runs/<run>   redraw a run's figures and report"
	@echo "make serve RUN=outputs/runs/<run>    a draw-a-digit page and an HTTP API on http://127.0.0.1:$(SERVE_PORT)/"
	@echo "make sweep SPACE=mlp  tune configs/SPACE.yaml over configs/sweeps/SPACE.yaml (WORKERS=2, TRIALS=, DATA_DIR=...)"
	@echo "make sweep-smoke      a 4-trial grid sweep of the smoke CNN (2 epochs each)"
	@echo "make tensorboard      serve $(OUTPUT_DIR) on TensorBoard: every run and sweep trial side by side (PORT=$(PORT))"
	@echo "make diagnose         gradient norms per layer of a deep MLP: sigmoid vs relu"
	@echo "make study            every lesson of configs/study/ (docs/guide/study.md), then one table of all their runs"
	@echo "                      or one lesson: study-perceptron | study-quickstart | study-softmax | study-vanishing"
	@echo "                      | study-fitting | study-regularization | study-ensemble | study-augmentation"
	@echo "                      (DATA_DIR=... EPOCHS=...)"
	@echo "make bench            custom trainer vs model.fit, bfloat16, memory, time to 90% and 93% (DATA_DIR=..., ~25 min)"
	@echo "make docs             serve the documentation site (MkDocs) on http://127.0.0.1:8000, rebuilt on each edit"
	@echo "make docs-build       build the site into build/site/, strictly: a broken link or a page missing from nav fails"
	@echo "make clean            remove caches and build files (never outputs/); distclean also removes $(VENV)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(TF_EXTRA),export,dev]"
	@touch $@

# Tests run on every core (pytest-xdist); work-stealing evens out the few long end-to-end tests.
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The edit-test loop: everything but the end-to-end checks marked slow.
test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: install
	$(BIN)/ruff check mnist_pipeline tests benchmarks

smoke: install
	$(BIN)/mnist train --config configs/smoke.yaml $(TRAIN_FLAGS)

train-mlp: install
	$(BIN)/mnist train --config configs/mlp.yaml $(TRAIN_FLAGS)

train-deep-mlp: install
	$(BIN)/mnist train --config configs/deep_mlp.yaml $(TRAIN_FLAGS)

train-cnn: install
	$(BIN)/mnist train --config configs/cnn.yaml $(TRAIN_FLAGS)

# $(call train_each,<configs under configs/, without .yaml>,<extra flags>): train each in turn, showing its
# output; the shell variable `runs` gathers their run folders, and with RUN_LOG set each is appended there too.
define train_each
mkdir -p $(OUTPUT_DIR); log=$$(mktemp); for config in $(1); do \
  $(BIN)/mnist train --config configs/$$config.yaml $(TRAIN_FLAGS) $(2) | tee $$log; \
  run=$$(tail -n 1 $$log | sed 's/^run folder: //'); runs="$$runs $$run"; \
  $(if $(RUN_LOG),echo "$$run" >> $(RUN_LOG);) \
done; rm -f $$log
endef
# $(call train_and_compare,<configs>): train_each, then `mnist compare` of those runs.
define train_and_compare
$(call train_each,$(1)); $(BIN)/mnist compare $$runs --output-dir $(OUTPUT_DIR)
endef

compare: install
	@$(call train_and_compare,$(COMPARE))

compare-fashion: install
	$(MAKE) compare COMPARE="mlp_fashion deep_mlp_fashion cnn_fashion" DATA_DIR=$(or $(DATA_DIR),$(FASHION_DIR))

# Optuna sweeps (docs/guide/sweeps.md): re-running the same command continues the sweep.
SPACE ?= mlp
WORKERS ?= 2
TRIALS ?=
sweep: install
	$(BIN)/mnist sweep --config configs/$(SPACE).yaml --space configs/sweeps/$(SPACE).yaml --workers $(WORKERS) \
	  $(if $(TRIALS),--trials $(TRIALS)) $(SWEEP_FLAGS)

sweep-smoke: install
	$(BIN)/mnist sweep --config configs/smoke.yaml --space configs/sweeps/smoke.yaml --set training.epochs=2 \
	  --name sweep-smoke $(SWEEP_FLAGS)

# Every run folder holds tensorboard/{train,validation,test}: the board lists each as runs/<run>/tensorboard/<phase>,
# and a sweep's trials as sweeps/<name>/runs/<run>/tensorboard/<phase>.
PORT ?= 6006
tensorboard: install
	$(BIN)/tensorboard --logdir $(OUTPUT_DIR) --host 127.0.0.1 --port $(PORT)

report: install
	@test -n "$(RUN)" || { echo "usage: make report RUN=outputs/runs/<run folder>"; exit 2; }
	$(BIN)/mnist report $(RUN)

# docs/guide/serve.md: the run's ONNX export in onnxruntime (made on first start), on this machine only.
SERVE_PORT ?= 8000
serve: install
	@test -n "$(RUN)" || { echo "usage: make serve RUN=outputs/runs/<run folder> [SERVE_PORT=8000] [ARGS=...]"; exit 2; }
	$(BIN)/mnist serve $(RUN) --port $(SERVE_PORT) $(ARGS)

# Six sigmoid layers pass back at most (1/4)^6 of the signal: the first layers barely learn. ReLU does not shrink it.
diagnose: install
	$(BIN)/mnist diagnose gradients --config configs/deep_mlp.yaml --set model.params.units=[128,128,128,128,128,128] \
	  --set model.params.batch_norm=false --set model.params.dropout_rate=0 \
	  --compare model.params.activation=sigmoid,relu $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR)

# The study (docs/guide/study.md): the classic MNIST lessons, one target each. Every run folder a lesson makes is
# added to $(STUDY_RUNS), which `make study` starts empty and ends by comparing as one table.
STUDY_RUNS ?= $(OUTPUT_DIR)/study-runs.txt
STUDY_LESSONS = study-perceptron study-quickstart study-softmax study-vanishing study-fitting study-regularization \
	study-ensemble study-augmentation
$(STUDY_LESSONS): RUN_LOG = $(STUDY_RUNS)

study: install
	@mkdir -p $(OUTPUT_DIR); : > $(STUDY_RUNS)
	$(MAKE) $(STUDY_LESSONS)
	$(BIN)/mnist compare $$(cat $(STUDY_RUNS)) --output-dir $(OUTPUT_DIR)

study-perceptron: install
	@$(call train_each,study/perceptron)

study-quickstart: install
	@$(call train_each,study/quickstart)

study-softmax: install
	@$(call train_each,study/softmax_regression)

# Gradient norms first (a few steps, both activations), then both networks trained and compared.
study-vanishing: install
	$(BIN)/mnist diagnose gradients --config configs/study/vanishing/sigmoid.yaml --steps 50 \
	  --compare model.params.activation=sigmoid,relu $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR)
	@$(call train_and_compare,study/vanishing/sigmoid study/vanishing/relu)

study-fitting: install
	@$(call train_and_compare,study/fitting/underfit study/fitting/overfit study/fitting/regularized)

study-regularization: install
	@$(call train_and_compare,study/fitting/overfit study/regularization/l1 study/regularization/l2 \
	  study/regularization/dropout study/regularization/batch_norm study/regularization/init_he_normal \
	  study/regularization/init_zeros)

study-ensemble: install
	@for seed in 1 2 3; do \
	  $(call train_each,study/ensemble,--set training.seed=$$seed --set output.name=ensemble-seed$$seed); done; \
	$(BIN)/mnist ensemble $$runs $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The same CNN without and with augmentation, each scored under MNIST-C's corruptions, ranked by that score.
study-augmentation: install
	@$(call train_each,study/augmentation/plain study/augmentation/augmented); \
	$(BIN)/mnist compare $$runs --rank-by corrupted --output-dir $(OUTPUT_DIR)

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# Custom trainer vs model.fit, side by side, plus ceiling, FLOPs, load time, CLI latency, memory, race, int8 exports, serving under load (~22 min).
bench: install
	$(BIN)/python benchmarks/bench.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --output-dir $(OUTPUT_DIR)

# The documentation site (mkdocs.yml, docs/): the CLI and config references are generated from the code.
.PHONY: docs docs-build
# NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2 is not about this site.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site
