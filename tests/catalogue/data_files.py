"""Bad data sets (IDX and npz: truncated, bombs, lying headers, objects, NaN) and bad files to predict."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from catalogue import TINY, Case
from catalogue.builders import on_run
from conftest import MLP, ROOT
from mnist_pipeline.data.idx import write_idx


def bad_data(change):
    """Train on a copy of the data with one file replaced by what `change(folder)` writes."""
    def make(tmp, data, completed, resumable, diverged):
        copy = shutil.copytree(data, tmp / "data")
        change(copy)
        return ["train", "--config", MLP, "--data-dir", copy, "--output-dir", tmp / "out", *TINY], copy
    return make


def gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


def gz_bomb_trailing(folder: Path) -> None:
    """A valid header and data, then 2 GB of zeros: inflating it all would take gigabytes."""
    labels = np.arange(300, dtype=np.uint8) % 10
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(idx_header(2049, 300) + labels.tobytes())
        block = bytes(1 << 20)
        for _ in range(64):  # 64 MiB here; the reader stops one byte past the promise either way
            f.write(block)


def npz(folder: Path, **arrays) -> Path:
    for p in folder.glob("*"):
        p.unlink()
    np.savez(folder / "mnist.npz", **arrays)
    return folder / "mnist.npz"


def good_arrays():
    rng = np.random.default_rng(0)
    return dict(x_train=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8), y_train=np.arange(300) % 10,
                x_test=rng.integers(0, 255, (100, 28, 28), dtype=np.uint8), y_test=np.arange(100) % 10)


def npz_truncated(folder):
    path = npz(folder, **good_arrays())
    path.write_bytes(path.read_bytes()[:5000])


def npz_bad_crc(folder):
    path = npz(folder, **good_arrays())
    raw = bytearray(path.read_bytes())
    raw[2000] ^= 0xFF  # inside x_train's stored bytes
    path.write_bytes(bytes(raw))


def npz_bomb(folder):
    for p in folder.glob("*"):
        p.unlink()
    with zipfile.ZipFile(folder / "mnist.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                              "shape": (8_000_000, 28, 28)})
                member.write(header.getvalue())
                block = bytes(1 << 20)
                for _ in range(8 if key == "x_train" else 0):
                    member.write(block)


def npz_declared_bomb(folder):
    """A zip directory that declares 4 GB for an array (what a real bomb's directory says)."""
    path = npz(folder, **good_arrays())
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the first central directory entry: x_train
    raw[entry + 24: entry + 28] = struct.pack("<I", 0xF000_0000)  # its uncompressed size
    path.write_bytes(bytes(raw))


def npz_objects(folder):
    arrays = good_arrays()
    arrays["y_train"] = np.array([{"label": 1}] * 300, dtype=object)
    npz(folder, **arrays)


def predict(*files):
    """`mnist predict` on the completed run with files written by `files` (name, bytes or a writer)."""
    def make(tmp, data, completed, resumable, diverged):
        paths = []
        for name, content in files:
            path = tmp / name
            if callable(content):
                content(path)
            elif content is not None:
                path.write_bytes(content)
            paths.append(path)
        return ["predict", completed, *paths], None
    return make


def png_bomb(path: Path) -> None:
    """A PNG whose header says 100,000 x 100,000 pixels: decoding it would need 10 GB."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR's width and height, then its CRC
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))


def png_truncated(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:200])


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros((28, 28)))
    return buffer.getvalue()


def npy_lying_header() -> bytes:
    """An .npy whose header promises 50 GB."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100_000_000, 28, 28)})
    return header.getvalue() + bytes(64)




CASES = [
    # -- data files (exit 1, refused before any folder exists) --
    Case("idx-gz-header-bomb", bad_data(lambda d: gz(d / "train-images-idx3-ubyte.gz",
                                                 idx_header(2051, 50_000_000, 28, 28) + bytes(100))), 1,
     ["train-images-idx3-ubyte.gz", "MiB", "is it the right file"]),
    Case("idx-gz-trailing-bomb", bad_data(gz_bomb_trailing), 1, ["train-labels-idx1-ubyte.gz", "after the data"]),
    Case("idx-wrong-image-size", bad_data(lambda d: write_idx(d / "train-images-idx3-ubyte.gz",
                                                          np.zeros((300, 32, 32), np.uint8))), 1, ["(300, 32, 32)"]),
    Case("idx-is-a-folder", bad_data(lambda d: ((d / "t10k-labels-idx1-ubyte.gz").unlink(),
                                            (d / "t10k-labels-idx1-ubyte.gz").mkdir())), 1, ["t10k-labels"]),
    Case("idx-empty-file", bad_data(lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(b"")), 1,
     ["train-labels-idx1-ubyte.gz"]),
    Case("npz-truncated", bad_data(npz_truncated), 1, ["mnist.npz", "damaged or truncated"]),
    Case("npz-bad-checksum", bad_data(npz_bad_crc), 1, ["mnist.npz"]),
    Case("npz-bomb", bad_data(npz_bomb), 1, ["mnist.npz[x_train]", "promises 5,981 MiB"]),
    Case("npz-declared-bomb", bad_data(npz_declared_bomb), 1, ["mnist.npz", "MiB uncompressed"]),
    Case("npz-objects", bad_data(npz_objects), 1, ["mnist.npz[y_train]", "Python objects"]),
    Case("npz-nan-images", bad_data(lambda d: npz(d, **{**good_arrays(), "x_test": np.full((100, 28, 28), np.nan)})), 1,
     ["x_test", "whole numbers"]),
    # -- predict: every file on its own; here each case has one bad file --
    Case("predict-png-bomb", predict(("bomb.png", png_bomb)), 1, ["bomb.png", "megapixels"]),
    Case("predict-png-truncated", predict(("cut.png", png_truncated)), 1, ["cut.png", "not a readable image"]),
    Case("predict-npz-named-npy", predict(("pack.npy", npz_bytes())), 1, ["pack.npy", "an .npz archive named .npy"]),
    Case("predict-npy-nan", predict(("nan.npy", npy_bytes(np.full((28, 28), np.nan)))), 1, ["nan.npy", "NaN"]),
    Case("predict-npy-inf", predict(("inf.npy", npy_bytes(np.full((28, 28), np.inf)))), 1, ["inf.npy", "infinite"]),
    Case("predict-npy-lying-header", predict(("big.npy", npy_lying_header())), 1, ["big.npy"]),
    Case("predict-npy-objects", predict(("obj.npy", npy_bytes(np.array([None, 1], dtype=object)))), 1,
     ["obj.npy", "Python objects"]),
    Case("predict-empty-folder", predict(("adir", lambda p: p.mkdir())), 1, ["adir", "no images in this folder"]),
    Case("predict-missing", predict(("nothing.png", None)), 1, ["nothing.png", "file not found"]),
    Case("predict-text-file", predict(("notes.txt", b"hello")), 1, ["notes.txt", "unsupported file type"]),
    Case("predict-unfinished-run", on_run("predict", "resumable", None, lambda tmp: ROOT / "README.md"), 1,
     ["the run is running"]),
]
