import numpy as np
import pytest

from conftest import make_digits
from mnist_pipeline.data.prepare import (
    fit_normalization,
    prepare_splits,
    stratified_sample,
    stratified_split,
)
from mnist_pipeline.data.sources import RawData
from mnist_pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def raw():
    x_train, y_train = make_digits(1000, seed=1)
    y_train = y_train.copy()
    y_train[:150] = 0  # unbalanced classes, so stratification is visible
    x_test, y_test = make_digits(100, seed=2)
    return RawData(x_train, y_train, x_test, y_test, source="test")


def test_split_is_disjoint_complete_stratified_and_seeded(raw):
    keep, held = stratified_split(raw.y_train, 0.2, seed=3)
    assert len(np.intersect1d(keep, held)) == 0
    assert len(keep) + len(held) == 1000
    assert len(held) == 200
    share = np.bincount(raw.y_train[held], minlength=10) / np.bincount(raw.y_train, minlength=10)
    np.testing.assert_allclose(share, 0.2, atol=0.02)
    np.testing.assert_array_equal(held, stratified_split(raw.y_train, 0.2, seed=3)[1])
    assert not np.array_equal(held, stratified_split(raw.y_train, 0.2, seed=4)[1])


def test_sample_takes_exactly_n_with_class_shares(raw):
    pool = np.arange(1000)
    chosen = stratified_sample(pool, raw.y_train, 101, seed=0)
    assert len(chosen) == 101
    assert len(np.unique(chosen)) == 101
    expected = np.bincount(raw.y_train, minlength=10) * 101 / 1000
    assert np.all(np.abs(np.bincount(raw.y_train[chosen], minlength=10) - expected) < 1)


def test_prepare_subset_never_overlaps_validation(raw):
    splits = prepare_splits(raw, validation_split=0.1, subset=300, normalization="scale", seed=0)
    assert splits.sizes == {"train": 300, "val": 100, "test": 100}
    train_rows = {row.tobytes() for row in splits.x_train}
    assert not any(row.tobytes() in train_rows for row in splits.x_val)  # generated images are all distinct
    assert splits.x_train.shape == (300, 28, 28)  # stored as read
    assert splits.x_train.dtype == np.uint8
    assert splits.inputs(splits.x_train).shape == (300, 28, 28, 1)
    assert splits.inputs(splits.x_train).dtype == np.float32
    assert splits.y_train.dtype == np.int32


def test_scale_maps_to_unit_interval(raw):
    splits = prepare_splits(raw, validation_split=0.1, subset=None, normalization="scale", seed=0)
    x_train, x_test = splits.inputs(splits.x_train), splits.inputs(splits.x_test)
    assert x_train.min() >= 0
    assert x_train.max() <= 1
    np.testing.assert_allclose(x_test[..., 0], raw.x_test / 255.0, rtol=1e-6)


def test_standardize_uses_training_statistics_only(raw):
    splits = prepare_splits(raw, validation_split=0.5, subset=None, normalization="standardize", seed=0)
    norm = splits.normalization
    x_train = splits.inputs(splits.x_train)
    assert abs(x_train.mean()) < 1e-4
    assert x_train.std() == pytest.approx(1.0, abs=1e-4)
    train_idx, _ = stratified_split(raw.y_train, 0.5, seed=0)
    assert norm.mean == pytest.approx(raw.x_train[train_idx].mean() / 255)
    assert norm.mean != pytest.approx(raw.x_train.mean() / 255, abs=1e-7)
    np.testing.assert_allclose(norm.invert(splits.inputs(splits.x_test))[..., 0], raw.x_test / 255.0, atol=1e-5)


def test_fit_normalization_scale_is_identity_stats():
    norm = fit_normalization(np.zeros((2, 28, 28), np.uint8), "scale")
    assert (norm.mean, norm.std) == (0.0, 1.0)


def test_subset_larger_than_training_split(raw):
    with pytest.raises(ConfigError, match="data.subset = 950 is larger than the 900 training examples"):
        prepare_splits(raw, validation_split=0.1, subset=950, normalization="scale", seed=0)


def test_validation_split_leaving_nothing(raw):
    tiny = RawData(raw.x_train[:3], raw.y_train[:3], raw.x_test, raw.y_test, "t")
    with pytest.raises(ConfigError, match="leaves an empty split"):
        prepare_splits(tiny, validation_split=0.1, subset=None, normalization="scale", seed=0)
