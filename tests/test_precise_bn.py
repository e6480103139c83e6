"""precise_bn: batch norm's statistics recomputed for the current weights, and what that does to a short run."""

import csv

import numpy as np
import pytest

from conftest import ROOT
from mnist_pipeline.config import load_config
from mnist_pipeline.pipeline import run


def test_recomputed_statistics_are_the_mean_of_each_batch_s_moments_with_dropout_off():
    import keras
    import tensorflow as tf

    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.precise_bn import PreciseBatchNorm

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")  # whatever an earlier test in this process left
    model = build_model("deep_mlp", units=[16, 8], batch_norm=True, dropout_rate=0.5)
    batches = [np.random.default_rng(i).uniform(0, 1, (32, 28, 28, 1)).astype(np.float32) for i in range(3)]
    model(batches[0], training=False)
    precise = PreciseBatchNorm(model)
    assert len(precise.layers) == 2
    assert precise.recompute(tf.data.Dataset.from_tensor_slices(np.stack(batches))) == 3

    # The first batch norm sees the first Dense layer's outputs: its statistics by hand, in NumPy.
    flatten, dense = model.stack[0], model.stack[1]
    outputs = [np.asarray(dense(flatten(b))) for b in batches]
    first = precise.layers[0]
    np.testing.assert_allclose(first.moving_mean.numpy(), np.mean([o.mean(axis=0) for o in outputs], axis=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), np.mean([o.var(axis=0) for o in outputs], axis=0),
                               rtol=1e-4, atol=1e-6)
    # Deterministic, with dropout off: the same batches give the same statistics again.
    second = precise.layers[1].moving_mean.numpy().copy()
    precise.recompute(tf.data.Dataset.from_tensor_slices(np.stack(batches)))
    np.testing.assert_array_equal(precise.layers[1].moving_mean.numpy(), second)


def test_a_model_without_batch_norm_is_left_alone():
    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.precise_bn import PreciseBatchNorm

    model = build_model("mlp", units=8)
    model(np.zeros((1, 28, 28, 1), np.float32))
    assert not PreciseBatchNorm(model)
    assert PreciseBatchNorm(model).recompute([np.zeros((1, 28, 28, 1))]) == 0


@pytest.mark.slow  # the shipped CNN trained on a short run
def test_the_shipped_cnn_on_a_short_run_validates_what_it_learned(idx_dir, tmp_path):
    """cnn.yaml for 2 epochs of 9 steps: Keras's moving averages (momentum 0.99) still hold mostly their
    starting values, and validation measures a model that never existed; recomputed, it measures this one."""
    def first_epoch(images: int):
        overrides = ["training.epochs=2", "training.batch_size=32", "data.subset=300",
                     "training.precision=float32", f"training.precise_batch_norm={images}"]
        cfg = load_config(ROOT / "configs/cnn.yaml", overrides, {"data.data_dir": str(idx_dir),
                                                                     "output.dir": str(tmp_path / str(images))})
        result = run(cfg)
        rows = list(csv.DictReader((result.run_dir / "history.csv").open()))
        return float(rows[0]["val_loss"]), float(rows[0]["loss"]), result.metrics

    precise_val_loss, train_loss, precise = first_epoch(2048)
    moving_val_loss, same_train_loss, moving = first_epoch(0)
    assert train_loss == same_train_loss  # training itself is untouched: only what validation sees differs
    # Seen here (generated digits): val loss 0.31 against 1.33 after epoch 1, test accuracy 0.99 against 0.74.
    assert precise_val_loss < moving_val_loss / 2
    assert precise["test_accuracy"] > moving["test_accuracy"] + 0.1


def test_statistics_batches_are_full_training_batches_or_none():
    from mnist_pipeline.data.datasets import statistics_batches

    x = np.arange(300 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(300, 28, 28)
    assert statistics_batches(x, 32, 0, seed=0) is None  # turned off
    assert statistics_batches(x[:20], 32, 2048, seed=0) is None  # not one full batch to compute them on
    assert [tuple(b.shape) for b in statistics_batches(x, 32, 10, seed=0)] == [(32, 28, 28)]  # at least one
    assert len(list(statistics_batches(x, 32, 2048, seed=0))) == 300 // 32  # no more than the split holds
    assert len(list(statistics_batches(x, 32, 100, seed=0))) == 100 // 32
