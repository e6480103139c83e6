"""A reader for the IDX format MNIST ships in (optionally gzip-compressed), checking every header field.

Format: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one big-endian
uint32 size per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.bounded_reads import require_file
from mnist_pipeline.errors import DataError, brief, plural
from mnist_pipeline.shapes import PIXELS

UNSIGNED_BYTE = 0x08


def read_idx(path: str | Path, expected_ndim: int, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or raw); DataError naming the file on any inconsistency.

    The header is checked (magic number, `item_shape` of each example, a size of at most MAX_BYTES) before the
    data is read, and no more than the promised bytes (+1, to see trailing junk) are inflated: a few kilobytes
    of gzip claiming gigabytes are refused at once, not decompressed.
    """
    path = require_file(path, "an IDX file")
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            head = stream.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: only {plural(len(head), 'byte')}, too short for an IDX header; the file is "
                                f"truncated: re-download it")
            zeros, dtype_code, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
            if zeros != 0 or dtype_code != UNSIGNED_BYTE or ndim != expected_ndim:
                magic = int.from_bytes(head, "big")
                wanted = (UNSIGNED_BYTE << 8) | expected_ndim
                raise DataError(f"{path}: bad magic number {magic} (expected {wanted} for a {expected_ndim}-d "
                                f"unsigned byte IDX file); is it the right file?")
            dims = stream.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path}: header cut short; the file is truncated: re-download it")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            _check_promise(path, shape, item_shape)
            size = int(np.prod(shape, dtype=np.int64))
            data = stream.read(size + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read the file ({brief(exc)}); re-download it") from None
    if len(data) < size:
        raise DataError(f"{path}: header promises shape {shape} ({size + 4 + 4 * ndim:,} bytes) but the file has "
                        f"{len(data) + 4 + 4 * ndim:,} bytes; the file is truncated: re-download it")
    if len(data) > size:
        # A raw file's excess is known from its size; a gzip one is not inflated further to count it.
        extra = "more bytes" if path.suffix == ".gz" else plural(path.stat().st_size - size - 4 - 4 * ndim, "byte")
        raise DataError(f"{path}: {extra} after the data of shape {shape}; the file is corrupt: re-download it")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


MAX_BYTES = 1_000_000 * PIXELS  # a million 28x28 images: well past MNIST's 60,000 and EMNIST's 700,000


def _check_promise(path: Path, shape: tuple[int, ...], item_shape: tuple[int, ...] | None) -> None:
    if item_shape is not None and shape[1:] != item_shape:
        raise DataError(f"{path}: images have shape {shape}, expected (N, {', '.join(map(str, item_shape))})")
    size = int(np.prod(shape, dtype=np.int64))
    if size > MAX_BYTES:
        raise DataError(f"{path}: header promises shape {shape} ({size / 2**20:,.0f} MiB), more than the "
                        f"{MAX_BYTES / 2**20:,.0f} MiB (1,000,000 images) read; is it the right file?")


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip when the name ends in .gz). For tests and data export."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
