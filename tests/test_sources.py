import shutil

import numpy as np
import pytest

from conftest import make_digits, write_idx_dir
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import ConfigError, DataError


def test_idx_dir(idx_dir):
    raw = load_raw("mnist", str(idx_dir))
    assert raw.x_train.shape == (600, 28, 28)
    assert raw.x_train.dtype == np.uint8
    assert raw.y_test.shape == (200,)
    assert set(np.unique(raw.y_train)) == set(range(10))
    assert raw.source == f"idx:{idx_dir.resolve()}"


def test_uncompressed_idx_dir(tmp_path):
    raw = load_raw("mnist", str(write_idx_dir(tmp_path / "plain", 100, 50, gz=False)))
    assert raw.x_train.shape == (100, 28, 28)
    assert raw.y_test.shape == (50,)


def test_npz_dir_and_npz_file(npz_dir, idx_dir):
    from_dir = load_raw("mnist", str(npz_dir))
    from_file = load_raw("fashion_mnist", str(npz_dir / "mnist.npz"))
    from_idx = load_raw("mnist", str(idx_dir))
    np.testing.assert_array_equal(from_dir.x_train, from_idx.x_train)
    np.testing.assert_array_equal(from_file.y_test, from_idx.y_test)
    assert from_dir.source.startswith("npz:")
    assert from_dir.source.endswith("mnist.npz")


def test_missing_dir_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*--data-dir"):
        load_raw("mnist", str(tmp_path / "nowhere"))


def test_empty_dir_says_what_to_put_there(tmp_path):
    with pytest.raises(DataError, match="no IDX files or .npz found.*train-images-idx3-ubyte"):
        load_raw("mnist", str(tmp_path))


def test_one_idx_file_missing(idx_dir, tmp_path):
    folder = shutil.copytree(idx_dir, tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing: t10k-labels-idx1-ubyte\[.gz\]"):
        load_raw("mnist", str(folder))


def replace(folder, name, array):
    write_idx(folder / name, array)
    return folder


@pytest.mark.parametrize("name, array, words", [
    ("train-labels-idx1-ubyte.gz", np.zeros(599, np.uint8), ["599 labels for 600 images"]),
    ("t10k-labels-idx1-ubyte.gz", np.full(200, 10, np.uint8), ["label 10 out of range 0..9"]),
    ("train-images-idx3-ubyte.gz", np.zeros((600, 32, 32), np.uint8), ["shape (600, 32, 32)", "(N, 28, 28)"]),
])
def test_inconsistent_idx_files(idx_dir, tmp_path, name, array, words):
    folder = replace(shutil.copytree(idx_dir, tmp_path / "d"), name, array)
    with pytest.raises(DataError) as info:
        load_raw("mnist", str(folder))
    assert name in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_npz_missing_key_and_bad_values(tmp_path):
    x, y = make_digits(20, 0)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(DataError, match="missing the array.*y_test"):
        load_raw("mnist", str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x_train=x.astype(float) / 255, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"b.npz\[x_train\].*whole numbers in 0..255"):
        load_raw("mnist", str(tmp_path / "b.npz"))


def test_several_npz_files_are_ambiguous(tmp_path):
    x, y = make_digits(20, 0)
    for name in ("a.npz", "b.npz"):
        np.savez(tmp_path / name, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="several .npz files"):
        load_raw("mnist", str(tmp_path))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    assert len(load_raw("mnist", str(tmp_path)).y_test) == 5  # <dataset>.npz wins


def test_offline_keras_download_says_how_to_use_local_files(monkeypatch):
    # Only the download itself is replaced (there is no network here); the message is what we test.
    import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError) as info:
        load_raw("mnist", None)
    message = str(info.value)
    assert message.startswith("could not download mnist through Keras (URL fetch failure")
    assert "--data-dir" in message
    assert "MNIST_DATA_DIR" in message
    assert "\n" not in message
