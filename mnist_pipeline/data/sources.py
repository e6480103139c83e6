"""Where the raw arrays come from: a data dir of IDX or .npz files, or Keras's download-and-cache.

Returns uint8 images (N, 28, 28) and labels (N,) checked for shape, count and label range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.bounded_reads import load_npz
from mnist_pipeline.data.idx import MAX_BYTES, read_idx
from mnist_pipeline.errors import ConfigError, DataError, brief, plural, quote
from mnist_pipeline.shapes import IMAGE_SIZE, NUM_CLASSES

STORED_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)  # one image as files store it: no channel axis
IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", 3),
    "y_train": ("train-labels-idx1-ubyte", 1),
    "x_test": ("t10k-images-idx3-ubyte", 3),
    "y_test": ("t10k-labels-idx1-ubyte", 1),
}
NPZ_KEYS = tuple(IDX_FILES)
OFFLINE_HINT = ("point --data-dir (or data.data_dir, or $MNIST_DATA_DIR) at a folder with the four IDX files "
                "(train-images-idx3-ubyte.gz, ...) or an .npz with x_train, y_train, x_test, y_test")


@dataclass(frozen=True)
class RawData:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) uint8 in 0..9
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # what was read, recorded in the run


def load_raw(dataset: str, data_dir: str | None) -> RawData:
    """Read `data_dir` (IDX or npz) when given, else download through Keras (cached in ~/.keras/datasets)."""
    if data_dir is None:
        return _load_keras(dataset)
    path = Path(data_dir).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data folder {quote(str(path))} is a file, not a folder or an .npz; {OFFLINE_HINT}")
    if not path.is_dir():
        raise ConfigError(f"data folder {quote(str(path))} does not exist; {OFFLINE_HINT}")
    idx_paths = {key: _find_idx(path, stem) for key, (stem, _) in IDX_FILES.items()}
    if all(idx_paths.values()):
        return _load_idx(idx_paths)
    npz = _find_npz(path, dataset)
    if npz is not None:
        return _load_npz(npz)
    if any(idx_paths.values()):
        missing = [IDX_FILES[k][0] + "[.gz]" for k, p in idx_paths.items() if p is None]
        raise DataError(f"{path}: {plural(len(missing), 'IDX file')} missing: {', '.join(missing)}; the folder "
                        f"needs all four")
    raise DataError(f"{path}: no IDX files or .npz found; {OFFLINE_HINT}")


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _find_npz(folder: Path, dataset: str) -> Path | None:
    candidates = sorted(folder.glob("*.npz"))
    named = folder / f"{dataset}.npz"
    if named.is_file():
        return named
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise DataError(f"{folder}: several .npz files ({names}); name one {dataset}.npz or pass the file itself")
    return candidates[0] if candidates else None


def _load_idx(paths: dict[str, Path]) -> RawData:
    arrays = {key: read_idx(p, IDX_FILES[key][1], STORED_SHAPE if key.startswith("x") else None)
              for key, p in paths.items()}
    for split in ("train", "test"):
        _check_pair(arrays[f"x_{split}"], arrays[f"y_{split}"], str(paths[f"x_{split}"]), str(paths[f"y_{split}"]))
    folder = paths["x_train"].parent.resolve()
    return RawData(**arrays, source=f"idx:{folder}")


def _load_npz(path: Path) -> RawData:
    arrays = load_npz(path, 4 * MAX_BYTES, NPZ_KEYS)  # room for wider dtypes than uint8
    for split in ("train", "test"):
        where = f"{path}[x_{split}/y_{split}]"
        for key in (f"x_{split}", f"y_{split}"):
            arrays[key] = _as_uint8(arrays[key], f"{path}[{key}]")
        _check_pair(arrays[f"x_{split}"], arrays[f"y_{split}"], where, where)
    return RawData(**arrays, source=f"npz:{path.resolve()}")


def _load_keras(dataset: str) -> RawData:
    import keras  # noqa: PLC0415 - only this source needs Keras, and importing it takes seconds

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[dataset]
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...") when offline
        raise DataError(f"could not download {dataset} through Keras ({brief(exc)}); "
                        f"offline? {OFFLINE_HINT}") from None
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        _check_pair(x, y, f"keras {dataset} x_{split}", f"keras {dataset} y_{split}")
    return RawData(x_train, y_train, x_test, y_test, source=f"keras:{dataset} (cached in ~/.keras/datasets)")


def _as_uint8(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{where}: dtype {array.dtype} is not numeric")
    if array.size and (array.min() < 0 or array.max() > 255 or not np.all(np.mod(array, 1) == 0)):
        raise DataError(f"{where}: values must be whole numbers in 0..255 (raw pixels / labels), "
                        f"got {array.min()}..{array.max()}")
    return array.astype(np.uint8)


def _check_pair(x: np.ndarray, y: np.ndarray, x_where: str, y_where: str) -> None:
    if x.ndim != 3 or x.shape[1:] != STORED_SHAPE:
        raise DataError(f"{x_where}: images have shape {x.shape}, expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})")
    if y.ndim != 1:
        raise DataError(f"{y_where}: labels have shape {y.shape}, expected (N,)")
    if len(x) != len(y):
        raise DataError(f"{y_where}: {plural(len(y), 'label')} for {plural(len(x), 'image')}; the counts must match")
    if len(y) == 0:
        raise DataError(f"{y_where}: no examples")
    if y.max() >= NUM_CLASSES:
        raise DataError(f"{y_where}: label {int(y.max())} out of range 0..{NUM_CLASSES - 1}")
