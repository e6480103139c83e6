"""Turning a user's image file or .npy array into MNIST-style 28x28 uint8 digits (NumPy + Pillow, no TF).

MNIST's own recipe: light strokes on a dark background, the digit scaled to fit a 20x20 box keeping its
aspect ratio, then placed in a 28x28 field so that its centre of mass is at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BOX = 20  # MNIST digits fit a 20x20 box inside the 28x28 image


def load_digits(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(label, (28, 28) uint8) for each image in the file: one for an image, one or more for a .npy."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [(str(path), mnist_style(_read_image(path)))]
    raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'}; use PNG/JPEG or .npy")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Transparent pixels are background: flatten onto white before going grey.
                background = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def _load_npy(path: Path) -> list[tuple[str, np.ndarray]]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or array.size == 0:
        raise DataError(f"{path}: expected a numeric image array, got dtype {array.dtype} shape {array.shape}")
    array = array.astype(np.float32)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(f"{path}: expected shape (H, W), (N, H, W) or (N, H, W, 1), got {array.shape}")
    if array.max() <= 1.0:  # [0, 1] floats: bring to pixel scale
        array = array * 255.0
    names = [str(path)] if len(array) == 1 else [f"{path}[{i}]" for i in range(len(array))]
    # Arrays already in MNIST form (28x28, dark background) are used as they are.
    return [(name, image.clip(0, 255).astype(np.uint8) if image.shape == (28, 28) else mnist_style(image))
            for name, image in zip(names, array, strict=True)]


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """Any-size grey image (0-255) -> (28, 28) uint8, light digit on black, size-normalized and mass-centred."""
    from PIL import Image

    if np.median(_border(gray)) > 127:  # dark ink on light paper: invert to MNIST's light-on-dark
        gray = 255.0 - gray
    gray = np.clip(gray - np.median(_border(gray)), 0, None)  # background to 0
    if gray.max() <= 0:
        return np.zeros((28, 28), np.uint8)
    gray = gray * (255.0 / gray.max())
    rows, cols = np.nonzero(gray > 0.1 * 255)  # ignore faint noise when finding the digit's box
    digit = gray[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    scale = BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))  # (width, height)
    small = np.asarray(Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    small = np.clip(small, 0, 255)
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    canvas[top: top + small.shape[0], left: left + small.shape[1]] = small
    return _centre_of_mass_to_middle(canvas).round().astype(np.uint8)


def _border(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _centre_of_mass_to_middle(image: np.ndarray) -> np.ndarray:
    total = image.sum()
    rows, cols = np.indices(image.shape)
    shift_r = int(round(13.5 - (rows * image).sum() / total))
    shift_c = int(round(13.5 - (cols * image).sum() / total))
    shifted = np.zeros_like(image)
    src_r = slice(max(0, -shift_r), min(28, 28 - shift_r))
    src_c = slice(max(0, -shift_c), min(28, 28 - shift_c))
    dst_r = slice(max(0, shift_r), min(28, 28 + shift_r))
    dst_c = slice(max(0, shift_c), min(28, 28 + shift_c))
    shifted[dst_r, dst_c] = image[src_r, src_c]
    return shifted
