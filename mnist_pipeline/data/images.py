"""Turning a user's image file or .npy array into MNIST-style 28x28 uint8 digits (NumPy + Pillow, no TF).

MNIST's own recipe: light strokes on a dark background, the digit scaled to fit a 20x20 box keeping its
aspect ratio, then placed in a 28x28 field so that its centre of mass is at the centre.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError, brief, clip
from mnist_pipeline.files import load_npy, require_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BOX = 20  # MNIST digits fit a 20x20 box inside the 28x28 image
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; a decompression bomb claims far more
MAX_ARRAY_BYTES = 512 << 20  # an .npy to predict: ~170,000 28x28 float32 images
MIN_CONTRAST = 24  # grey levels (of 255) between the darkest and lightest pixel: below it, no digit to see


@dataclass(frozen=True)
class Digit:
    source: str  # the file, or file[i] for one image of an array
    image: np.ndarray | None  # (28, 28) uint8, MNIST-style; None when blank
    warning: str | None = None  # why there is no image to classify


def load_digits(path: str | Path) -> list[Digit]:
    """The images in a file, MNIST-style: one for an image file, one or more for a .npy. Any failure to read
    is a one-line DataError naming the file; a blank image is a Digit with a warning instead."""
    path = require_file(path, "image file or .npy array")
    if path.suffix.lower() == ".npy":
        return [_digit(name, image, prepared) for name, image, prepared in _load_npy(path)]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [_digit(str(path), _read_image(path), False)]
    raise DataError(f"{path}: unsupported file type {clip(path.suffix) or '(none)'}; use PNG/JPEG or .npy")


def _digit(source: str, gray: np.ndarray, prepared: bool) -> Digit:
    """`gray` (H, W) 0-255; `prepared`: already MNIST-style, used as it is."""
    if float(gray.max() - gray.min()) < MIN_CONTRAST:
        return Digit(source, None, f"{source}: the image is blank or nearly one colour "
                                   f"(contrast {gray.max() - gray.min():.0f} of 255); no digit to classify")
    return Digit(source, gray.clip(0, 255).astype(np.uint8) if prepared else mnist_style(gray))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    too_large = f"{path}: more than the {MAX_PIXELS // 1_000_000} megapixels read; scale the image down"
    try:
        with warnings.catch_warnings():
            # Pillow warns (on stderr) past ~89 megapixels and refuses past ~179; ours is a lower bound.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > MAX_PIXELS:
                raise DataError(f"{too_large} ({width}x{height})")
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Transparent pixels are background: flatten onto white before going grey.
                background = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.float32)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(too_large) from None
    except Exception as exc:  # Pillow raises many kinds (OSError, ValueError, SyntaxError, ...)
        raise DataError(f"{path}: not a readable image ({brief(exc)})") from None


def _load_npy(path: Path) -> list[tuple[str, np.ndarray, bool]]:
    """(name, (H, W) float32 0-255, already MNIST-style) for each image of a .npy array."""
    array = load_npy(path, MAX_ARRAY_BYTES)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array) \
            or array.size == 0:
        raise DataError(f"{path}: expected a numeric image array, got dtype {array.dtype} shape {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or infinite values; an image has pixel values 0-255 or 0-1")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < 1:
        raise DataError(f"{path}: expected shape (H, W), (N, H, W) or (N, H, W, 1), got {array.shape}")
    if array.max() <= 1.0:  # [0, 1] floats: bring to pixel scale
        array = array * 255.0
    names = [str(path)] if len(array) == 1 else [f"{path}[{i}]" for i in range(len(array))]
    # Arrays already in MNIST form (28x28, dark background) are used as they are.
    return [(name, image, image.shape == (28, 28)) for name, image in zip(names, array, strict=True)]


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """Any-size grey image (0-255) -> (28, 28) uint8, light digit on black, size-normalized and mass-centred."""
    from PIL import Image

    if ink_is_dark(gray):  # dark ink on lighter paper: invert to MNIST's light-on-dark
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


def ink_is_dark(gray: np.ndarray) -> bool:
    """Whether the strokes are darker than the background (the border's median). Decided by the pixels that
    stand out most from the background, not by how light the background is: light ink on mid-grey paper
    is light ink, however grey the paper."""
    deviation = gray - np.median(_border(gray))
    strong = np.abs(deviation) >= 0.5 * np.abs(deviation).max()
    return float(deviation[strong].sum()) < 0


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) uint8 digit as PNG bytes, exactly as the model sees it before normalization (light on dark):
    predicting the PNG again gives the same answer."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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
