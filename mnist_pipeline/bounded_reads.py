"""Reading array files that come from outside (data, run folders, files to predict) with bounded memory.

A few bytes of gzip or zip can claim gigabytes. These readers look at what a file declares (its zip
directory, its .npy header) and refuse a claim over the caller's limit before inflating anything; every
failure is a one-line DataError naming the file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError, TooLarge, brief, plural

MiB = 1 << 20
NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | Path, what: str = "a file") -> Path:
    """`path` if it is a regular file; folders, devices and pipes (which never end) are refused by name.
    `what` the file should be, with its article: "an IDX file"."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected {what}")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a device or pipe?); pass {what}")
    return path


def read_limited(path: Path, limit: int, what: str = "a file") -> bytes:
    """All bytes of a regular file of at most `limit` bytes."""
    path = require_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or brief(exc)})") from None
    if len(data) > limit:
        raise TooLarge(f"{path}: larger than {limit / MiB:,.0f} MiB, too large for {what}")
    return data


def load_npz(path: Path, limit: int, keys: tuple[str, ...] | None = None,
             optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz (all, or `keys`, which must be present, and those of `optional` that are), at most
    `limit` bytes uncompressed.

    Both what the zip directory declares and what each array's .npy header promises are checked before a
    member is inflated; the inflating itself stops at the declared size and checks the CRC.
    """
    path = require_file(path, "an .npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            wanted = list(keys) if keys is not None else list(members)
            missing = [k for k in wanted if k not in members]
            wanted += [k for k in optional if k in members and k not in wanted]
            if missing:
                raise DataError(f"{path}: missing the {'array' if len(missing) == 1 else 'arrays'} "
                                f"{', '.join(missing)}; expected {', '.join(wanted)}")
            declared = sum(members[k].file_size for k in wanted)
            if declared > limit:
                raise DataError(f"{path}: its arrays hold {declared / MiB:,.0f} MiB uncompressed, more than the "
                                f"{limit / MiB:,.0f} MiB allowed; is it the right file?")
            arrays = {}
            for key in wanted:
                with archive.open(members[key]) as member:
                    head = member.read(min(members[key].file_size, 4096))
                    _npy_header(head, f"{path}[{key}]", limit, members[key].file_size)  # before the rest
                    arrays[key] = npy_from_bytes(head + member.read(), f"{path}[{key}]", limit)
            return arrays
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise DataError(f"{path}: not a readable .npz (damaged or truncated: {brief(exc)})") from None


def load_npy(path: Path, limit: int) -> np.ndarray:
    """The array of an .npy file whose header promises at most `limit` bytes, and whose size matches."""
    path = Path(path)
    head = read_limited(path, limit + 4096, "an .npy file")  # + room for the header
    if head.startswith(_ZIP_MAGIC):
        raise DataError(f"{path}: an .npz archive named .npy; rename it to .npz or save one array with np.save")
    return npy_from_bytes(head, str(path), limit)


def _npy_header(data: bytes, where: str, limit: int | None, total: int) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) from the start of an .npy of `total` bytes; refuses
    a header that promises more than `limit` bytes or other than the bytes that follow it."""
    if not data.startswith(NPY_MAGIC):
        raise DataError(f"{where}: not an .npy array (no NumPy header)")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(stream) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(stream))
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:  # NumPy's literal_eval
        raise DataError(f"{where}: damaged .npy header ({brief(exc)})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (dtype {dtype}); only numeric arrays are read")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if limit is not None and size > limit:
        raise TooLarge(f"{where}: its header promises {size / MiB:,.0f} MiB, more than the {limit / MiB:,.0f} MiB "
                        f"allowed")
    if total - stream.tell() != size:
        follow = total - stream.tell()
        raise DataError(f"{where}: the header promises shape {shape} ({size:,} bytes) but "
                        f"{plural(follow, 'byte')} {'follows' if follow == 1 else 'follow'}; the file is truncated or "
                        f"damaged")
    return shape, fortran, dtype, stream.tell()


def npy_from_bytes(data: bytes, where: str, limit: int | None = None) -> np.ndarray:
    """The array of an .npy file's bytes (read-only: a view of them), named `where` in errors."""
    shape, fortran, dtype, offset = _npy_header(data, where, limit, len(data))
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape, order="F" if fortran else "C")
