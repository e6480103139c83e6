"""Checkpoints hold every variable, and a run killed after an epoch resumes to exactly the uninterrupted run,
for every shipped config."""

import json

import numpy as np
import pytest

from conftest import ROOT, SHIPPED_CONFIGS, history_without_seconds, start_mnist
from mnist_pipeline.checkpoints import Checkpointer, tracked_variables
from mnist_pipeline.config import load_config
from mnist_pipeline.data.prepare import prepare_splits
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.startup import start_runtime
from mnist_pipeline.training_setup import build_training

pytestmark = pytest.mark.slow  # training processes killed after an epoch and resumed

TINY = ["data.subset=300", "training.batch_size=32", "training.epochs=3", "data.validation_split=0.2"]


def _setup(cfg, idx_dir):
    start_runtime(cfg)
    raw = load_raw(cfg.data.dataset, str(idx_dir))
    splits = prepare_splits(raw, validation_split=0.2, subset=300, normalization=cfg.data.normalization, seed=0)
    return build_training(cfg, splits)


@pytest.mark.parametrize("config", ["cnn", "deep_mlp"])  # batch norm (conv and dense), dropout, augmentation
def test_a_checkpoint_restores_every_variable_of_model_optimizer_and_generators(config, idx_dir, tmp_path):
    cfg = load_config(ROOT / f"configs/{config}.yaml", [*TINY, "training.epochs=1"], {"training.device": "cpu"})
    trained = _setup(cfg, idx_dir)
    saver = Checkpointer(tmp_path, trained.model, trained.trainer.optimizer)
    trained.trainer.fit(trained.batches, trained.val_data, 1, on_epoch=lambda record, state: saver.save(state))
    saved = {owner: [v.numpy().copy() for v in variables]
             for owner, variables in tracked_variables(trained.model, trained.trainer.optimizer).items()}
    paths = [v.path for v in trained.model.variables]
    assert any("moving_mean" in p for p in paths)
    assert any("moving_variance" in p for p in paths)
    assert any("seed_generator" in p for p in paths)  # dropout's random generator state

    fresh = _setup(cfg, idx_dir)
    variables = tracked_variables(fresh.model, fresh.trainer.optimizer)
    for v in (v for vs in variables.values() for v in vs):  # a value no variable can hold after training
        v.assign(np.full(v.shape, 7 if "int" in str(v.dtype) else -7.5, dtype=str(v.dtype)))
    Checkpointer(tmp_path, fresh.model, fresh.trainer.optimizer).restore()
    for owner, values in saved.items():
        assert len(values) == len(variables[owner])
        for expected, v in zip(values, variables[owner], strict=True):
            np.testing.assert_array_equal(v.numpy(), expected, err_msg=f"{owner}: {v.path} not restored")


PLATEAU = ["training.schedule.name=reduce_on_plateau", "training.schedule.patience=1"]  # state carried across epochs
VARIANTS = [(c, []) for c in SHIPPED_CONFIGS] + [
    (ROOT / "configs/smoke.yaml", PLATEAU),
    # XLA groups of 3 steps that make their own augmented and erased batches
    (ROOT / "configs/mlp.yaml", [*PLATEAU, "training.steps_per_execution=3", "data.augmentation.erasing=0.3"]),
    # bfloat16 compute: batch norm's fused kernel on bfloat16, dropout, augmentation
    (ROOT / "configs/cnn.yaml", ["training.precision=mixed_bfloat16"]),
    # the weights' moving average (optimizer variables) and decoupled weight decay
    (ROOT / "configs/mlp.yaml", ["training.ema=0.9", "training.weight_decay=0.05"]),
]


VARIANT_IDS = [config.stem + "".join(f"+{item.split('=')[0].rsplit('.', 1)[-1]}" for item in extra)
               for config, extra in VARIANTS]  # mlp+ema+weight_decay


@pytest.mark.slow
@pytest.mark.parametrize("config, extra", VARIANTS, ids=VARIANT_IDS)
def test_every_shipped_config_killed_after_an_epoch_resumes_bit_for_bit(config, extra, idx_dir, tmp_path):
    args = ["train", "--config", config, "--data-dir", idx_dir, "--device", "cpu",
            *(arg for item in [*TINY, *extra] for arg in ("--set", item))]
    reference = start_mnist(*args, "--output-dir", tmp_path / "reference")
    victim = start_mnist(*args, "--output-dir", tmp_path / "victim", fault="kill-after-epoch=2")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    assert victim.wait(timeout=600) == -9, victim.stderr.read()
    (whole,) = (tmp_path / "reference/runs").iterdir()
    (killed,) = (tmp_path / "victim/runs").iterdir()
    assert json.loads((killed / "status.json").read_text())["status"] == "running"
    assert len(history_without_seconds(killed)) == 1 + 2
    assert not (killed / "metrics.json").exists()

    resumed = start_mnist("train", "--resume", killed)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "going on from the checkpoint after epoch 2 (of 3)" in stdout
    assert history_without_seconds(killed) == history_without_seconds(whole)
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (whole, killed))
    for key in ("test_loss", "test_accuracy", "best_epoch", "best_val_loss", "confusion_matrix"):
        assert a[key] == b[key], key
    assert b["resumed"] is True
    assert json.loads((killed / "status.json").read_text())["status"] == "completed"
