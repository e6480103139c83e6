"""A reader for the IDX format MNIST ships in (optionally gzip-compressed), checking every header field.

Format: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one big-endian
uint32 size per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError

UNSIGNED_BYTE = 0x08


def read_idx(path: str | Path, expected_ndim: int) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or raw); DataError naming the file on any inconsistency."""
    path = Path(path)
    try:
        raw = _read_bytes(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read the file ({exc}); re-download it") from None
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header; the file is truncated")
    zeros, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zeros != 0 or dtype_code != UNSIGNED_BYTE or ndim != expected_ndim:
        magic = int.from_bytes(raw[:4], "big")
        wanted = (UNSIGNED_BYTE << 8) | expected_ndim
        raise DataError(f"{path}: bad magic number {magic} (expected {wanted} for a {expected_ndim}-d unsigned "
                        f"byte IDX file); is it the right file?")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: header cut short ({len(raw)} bytes); the file is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header_end + int(np.prod(shape, dtype=np.int64))
    if len(raw) < expected:
        raise DataError(f"{path}: header promises shape {shape} ({expected} bytes) but the file has "
                        f"{len(raw)} bytes; the file is truncated")
    if len(raw) > expected:
        raise DataError(f"{path}: {len(raw) - expected} bytes after the data of shape {shape}; "
                        f"the file is corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip when the name ends in .gz). For tests and data export."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()
