"""Normalization and the seeded, stratified train / validation split and training subset (NumPy only).

The test split is passed through untouched apart from normalization with the training statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mnist_pipeline.data.sources import RawData
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.shapes import NUM_CLASSES


@dataclass(frozen=True)
class Normalization:
    """x_model = (x_uint8 / 255 - mean) / std; `scale` is mean 0, std 1. Saved with the run."""

    method: str
    mean: float = 0.0
    std: float = 1.0

    def apply(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 -> (N, 28, 28, 1) float32."""
        return self.standardize(images.astype(np.float32)[..., None] / np.float32(255.0))

    def standardize(self, x):
        """Pixels scaled to [0, 1] -> model input, in float32: a NumPy array, or a tensor inside a graph (the
        exported models apply the run's normalization with this very code)."""
        if self.method == "standardize":
            x = (x - np.float32(self.mean)) / np.float32(self.std)
        return x

    @property
    def background(self) -> float:
        """The model-input value of a blank (0) pixel."""
        return -self.mean / self.std if self.method == "standardize" else 0.0

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Model input back to [0, 1] image scale (for showing images)."""
        return x * self.std + self.mean if self.method == "standardize" else x

    def describe(self) -> str:
        return f"standardize (mean {self.mean:.4f}, std {self.std:.4f})" if self.method == "standardize" else "scale"

    def to_dict(self) -> dict:
        return asdict(self)


def fit_normalization(train_images: np.ndarray, method: str) -> Normalization:
    """Statistics from the training images only, so validation and test stay unseen."""
    if method == "scale":
        return Normalization("scale")
    x = train_images.astype(np.float64) / 255.0
    return Normalization("standardize", mean=float(x.mean()), std=float(x.std()) or 1.0)


@dataclass(frozen=True)
class Splits:
    """The three splits as stored: (N, 28, 28) uint8 images, a quarter of float32's memory. Batch sources and
    evaluation batches normalize them inside the graph (`normalization`); `inputs` gives NumPy model inputs."""

    x_train: np.ndarray  # (N, 28, 28) uint8, as read
    y_train: np.ndarray  # (N,) int32
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normalization: Normalization

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """Stored images of these splits as the model takes them: (N, 28, 28, 1) float32, normalized."""
        return self.normalization.apply(images)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of the examples held out with class proportions kept."""
    everything = np.arange(len(labels))
    held_out = stratified_sample(everything, labels, round(fraction * len(labels)), seed)
    keep = np.setdiff1d(everything, held_out, assume_unique=True)
    return keep, held_out


def stratified_sample(indices: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` of `indices`, each class getting its share (largest remainder), drawn with `seed`; sorted."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels[indices], return_counts=True)
    quota = counts * n / len(indices)
    take = np.floor(quota).astype(int)
    # Hand out the rounding leftovers to the classes with the largest fractional parts.
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    chosen = [rng.permutation(indices[labels[indices] == c])[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=int)


ALIGNMENT = 64  # bytes: TensorFlow's CPU kernels abort on a tensor buffer that does not start on this boundary


def aligned_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array[rows]`, in a C-contiguous buffer that starts on an ALIGNMENT-byte boundary: TensorFlow can then
    read it in place (`datasets.shared_tensor`) instead of holding a copy of its own."""
    shape = (len(rows), *array.shape[1:])
    nbytes = int(np.prod(shape)) * array.dtype.itemsize
    buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    out = buffer[start:start + nbytes].view(array.dtype).reshape(shape)
    np.take(array, rows, axis=0, out=out)
    return out


def prepare_splits(raw: RawData, *, validation_split: float, subset: int | None, normalization: str,
                   seed: int) -> Splits:
    """Split raw training data into train / validation, optionally subsample train; fit the normalization on
    the training split (the images stay uint8: see `Splits`)."""
    train_idx, val_idx = stratified_split(raw.y_train, validation_split, seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ConfigError(f"data.validation_split = {validation_split} of {len(raw.y_train)} training examples "
                          f"leaves an empty split; choose a value that leaves both sides at least one example")
    if subset is not None:
        if subset > len(train_idx):
            raise ConfigError(f"data.subset = {subset} is larger than the {len(train_idx)} training examples "
                              f"left after the validation split; lower it or remove it")
        train_idx = stratified_sample(train_idx, raw.y_train, subset, seed + 1)
    x_train = aligned_rows(raw.x_train, train_idx)
    labels = lambda y: y.astype(np.int32)  # noqa: E731 - sparse labels for the loss
    return Splits(
        x_train=x_train, y_train=labels(raw.y_train[train_idx]),
        x_val=aligned_rows(raw.x_train, val_idx), y_val=labels(raw.y_train[val_idx]),
        x_test=aligned_rows(raw.x_test, np.arange(len(raw.x_test))), y_test=labels(raw.y_test),
        normalization=fit_normalization(x_train, normalization),
    )


def class_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()
