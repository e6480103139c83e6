import gzip

import numpy as np
import pytest

from mnist_pipeline.data.idx import read_idx, write_idx
from mnist_pipeline.errors import DataError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(read_idx(tmp_path / name, 3), images)


def test_header_is_the_standard_mnist_one(tmp_path):
    write_idx(tmp_path / "labels", np.array([3, 1, 4], dtype=np.uint8))
    raw = (tmp_path / "labels").read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2049
    assert int.from_bytes(raw[4:8], "big") == 3


def corrupt(tmp_path, data: bytes, gz=False):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def header(magic, *dims):
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize("data, ndim, words", [
    (header(2049, 3) + bytes(3), 3, ["bad magic number 2049", "expected 2051"]),
    (header(2051, 2, 28, 28) + bytes(2 * 784), 1, ["bad magic number 2051", "expected 2049"]),
    (b"PK\x03\x04" + bytes(100), 3, ["bad magic number"]),
    (header(2051, 2, 28, 28) + bytes(784 + 100), 3, ["truncated", "(2, 28, 28)"]),
    (header(2049, 5) + bytes(7), 1, ["2 bytes after the data", "corrupt"]),
    (header(2051, 2, 28), 3, ["header cut short", "truncated"]),
    (b"\x00\x00", 1, ["too short", "truncated"]),
])
def test_corrupt_files_name_the_file_and_the_problem(tmp_path, data, ndim, words):
    path = corrupt(tmp_path, data)
    with pytest.raises(DataError) as info:
        read_idx(path, ndim)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_truncated_gzip_stream(tmp_path):
    whole = gzip.compress(header(2049, 1000) + bytes(1000))
    path = tmp_path / "labels.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cannot read the file"):
        read_idx(path, 1)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz", 1)
