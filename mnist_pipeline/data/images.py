"""Reading what a user gives `mnist predict`: image files of any size (phone photos included), .npy arrays in the
layouts people keep images in, and folders of either. Each picture then goes through its dataset's recipe
(`recipes.prepare`). NumPy + Pillow; no TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.bounded_reads import NPY_MAGIC, load_npy, npy_from_bytes, require_file
from mnist_pipeline.data.recipes import corner_level, ink_is_dark, prepare
from mnist_pipeline.errors import DataError, NotAnImage, TooLarge, brief, clip
from mnist_pipeline.shapes import IMAGE_SIZE, PIXELS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pixels decoded in full (PNG, TIFF, ...): a 12000x12000 scan is 144 million; a decompression bomb claims
# billions from a few kilobytes. JPEG decodes at up to 1/8 scale (Image.draft), so its limit is 64 times larger
# in the header for the same memory: any phone's photo (48-200 megapixels) reads.
MAX_DECODED_PIXELS = 150_000_000
MAX_JPEG_PIXELS = 64 * MAX_DECODED_PIXELS
READ_SIDE = 1024  # a photo is decoded at no less than this on its longer side, then reduced
MAX_ARRAY_BYTES = 512 << 20  # an .npy to predict: ~170,000 28x28 float32 images
MIN_SIDE = 8  # an image smaller than 8x8 pixels is not a picture of anything: a wrong layout, most likely
MIN_CONTRAST = 24  # grey levels (of 255) between the darkest and lightest pixel: below it, nothing to see
LAYOUTS = ("(28, 28), (N, 28, 28), (N, 28, 28, 1) or (N, 784) grey, (H, W, 3) or (H, W, 4) colour, "
           "any H, W >= 8; uint8 0-255 or floats 0-1")


@dataclass(frozen=True)
class Item:
    source: str  # the file, or file[i] for one image of an array
    image: np.ndarray | None  # (28, 28) uint8 as the run's dataset makes its images; None when blank
    warning: str | None = None  # why there is no image to classify


def input_files(arguments: list[str]) -> list[tuple[str, str | None]]:
    """(file, error) for each file to predict: the arguments in order, a folder replaced by the images and
    arrays directly in it (by name). A folder with none of them is one error entry."""
    files: list[tuple[str, str | None]] = []
    for argument in arguments:
        folder = Path(argument)
        if not folder.is_dir():
            files.append((argument, None))
            continue
        try:
            found = sorted(str(p) for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()
                           and p.suffix.lower() in IMAGE_SUFFIXES | {".npy"})
        except OSError as exc:
            files.append((argument, f"{clip(argument)}: cannot list the folder ({exc.strerror or exc})"))
            continue
        files += [(file, None) for file in found] or [
            (argument, f"{clip(argument)}: no images in this folder (PNG, JPEG, BMP, GIF, WebP, TIFF or .npy)")]
    return files


def load_items(path: str | Path, dataset: str) -> list[Item]:
    """The pictures in a file, prepared as `dataset`'s images are: one for an image file, one or more for a
    .npy. Any failure to read is a one-line DataError naming the file; a blank picture is an Item with a
    warning instead."""
    path = require_file(path, "an image file or .npy array")
    if path.suffix.lower() == ".npy":
        return array_items(load_npy(path, MAX_ARRAY_BYTES), str(path), dataset)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty (0 bytes)")
        return [_image_item(path, str(path), dataset)]
    hint = "; convert HEIC/HEIF photos to JPEG first" if path.suffix.lower() in (".heic", ".heif") else ""
    raise DataError(f"{path}: unsupported file type {clip(path.suffix) or '(none)'}; use PNG, JPEG, BMP, GIF, "
                    f"WebP, TIFF or .npy{hint}")


def items_from_bytes(data: bytes, name: str, dataset: str) -> list[Item]:
    """The pictures in an uploaded file's bytes (an image in any format Pillow reads, or an .npy array, told
    apart by their content, not by `name`), prepared as `load_items` prepares files."""
    if not data:
        raise DataError(f"{name}: empty (0 bytes); send an image file (PNG, JPEG, ...) or an .npy array")
    if data.startswith(NPY_MAGIC):
        return array_items(npy_from_bytes(data, name, MAX_ARRAY_BYTES), name, dataset)
    return [_image_item(io.BytesIO(data), name, dataset)]


def _image_item(source: Path | io.BytesIO, name: str, dataset: str) -> Item:
    gray = _read_image(source, name)
    return _item(name, gray, dataset, gray.shape == (IMAGE_SIZE, IMAGE_SIZE))


def _item(source: str, gray: np.ndarray, dataset: str, ready: bool) -> Item:
    """`gray` (H, W) 0-255; `ready`: already 28x28, taken to be made as the dataset's images are (someone who
    brings a picture to exactly 28x28 has done so): only its polarity is checked."""
    if float(gray.max() - gray.min()) < MIN_CONTRAST:
        return Item(source, None, f"{source}: the image is blank or nearly one colour "
                                  f"(contrast {gray.max() - gray.min():.0f} of 255); nothing to classify")
    if ready:
        if ink_is_dark(gray - corner_level(gray)):  # dark on light: the datasets have light on black
            gray = 255.0 - gray
        return Item(source, gray.clip(0, 255).round().astype(np.uint8))
    prepared = prepare(gray, dataset)
    if prepared.max() < MIN_CONTRAST:  # only grain, a gradient or a shadow: nothing stood out from the surface
        return Item(source, None, f"{source}: nothing stands out from the paper or background (its grain, light "
                                  f"and shadows removed); nothing to classify")
    return Item(source, prepared)


@contextlib.contextmanager
def _pillow_limit(pixels: int):
    """Pillow's own bomb check, set to our limit while a header is read (it refuses past twice its setting)."""
    from PIL import Image

    kept = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels // 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = kept


def _read_image(source: Path | io.BytesIO, path: str) -> np.ndarray:
    """(H, W) float32 0-255 of the image file or bytes `source` (named `path` in errors), the picture upright
    (EXIF orientation applied), transparency as white, at most about READ_SIDE on its longer side. Memory stays
    bounded: JPEG decodes at a reduced scale, other formats are refused past MAX_DECODED_PIXELS before anything
    is decoded."""
    from PIL import Image, ImageOps

    try:
        with _pillow_limit(MAX_JPEG_PIXELS):
            image = Image.open(source)
        with image:
            width, height = image.size  # from the header: nothing is decoded yet
            if image.format == "JPEG":  # past MAX_JPEG_PIXELS, Pillow refused it at open (_pillow_limit)
                scale = max(1, min(width, height) // READ_SIDE)
                image.draft("L" if image.mode in ("L", "RGB", "CMYK", "YCbCr") else None,
                            (width // scale, height // scale))
            elif width * height > MAX_DECODED_PIXELS:
                raise TooLarge(f"{path}: {width}x{height} pixels is more than the "
                                f"{MAX_DECODED_PIXELS // 1_000_000} megapixels read from a {image.format} file; "
                                f"save it as JPEG or scale it down")
            image.load()
            if image.mode in ("P", "PA", "1"):  # palettes and bilevel: resampled only as full colour or grey
                image = image.convert("RGBA" if image.mode != "1" else "L")
            # Reduced before anything else is made from it: a 144-megapixel scan costs its decoded size once.
            image.thumbnail((2 * READ_SIDE, 2 * READ_SIDE), Image.Resampling.BOX)
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA") or "transparency" in image.info:
                # Transparent pixels are background: flatten onto white before going grey.
                background = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(background, image.convert("RGBA"))
            if image.mode.startswith("I;16") or image.mode in ("I", "F"):  # 16-bit and float: scale to 8 bits
                values = np.asarray(image, np.float32)
                return values * (255.0 / max(float(values.max()), 1.0)) if values.max() > 255 else values
            return np.asarray(image.convert("L"), dtype=np.float32)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise TooLarge(f"{path}: refused: its header claims over {MAX_JPEG_PIXELS // 1_000_000:,} megapixels, "
                        f"more than any photo (a decompression bomb?)") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read this image; scale it down") from None
    except Image.UnidentifiedImageError:  # its message quotes the file object, which says nothing to a user
        raise NotAnImage(f"{path}: not a readable image (no image format Pillow reads recognizes it)") from None
    except Exception as exc:  # Pillow raises many kinds (OSError, ValueError, SyntaxError, ...)
        raise NotAnImage(f"{path}: not a readable image ({brief(exc)})") from None


def array_items(array: np.ndarray, path: str, dataset: str) -> list[Item]:
    """The pictures of an array (an .npy file's, or JSON's), prepared as `dataset`'s images are."""
    return [_item(name, image, dataset, ready) for name, image, ready in _array_pictures(array, path)]


def _array_pictures(array: np.ndarray, path: str) -> list[tuple[str, np.ndarray, bool]]:
    """(name, (H, W) float32 0-255, already 28x28) for each picture of an array named `path`, in the layouts
    LAYOUTS names; anything else is refused with them named."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array) \
            or array.size == 0:
        raise DataError(f"{path}: expected a numeric image array, got dtype {array.dtype} shape {array.shape}; "
                        f"accepted: {LAYOUTS}")
    shape = array.shape
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or infinite values; an image has pixel values 0-255 or 0-1")
    if array.min() < 0 or array.max() > 255:
        raise DataError(f"{path}: values from {array.min():g} to {array.max():g}; pass pixel values 0-255 or "
                        f"0-1 (not standardized ones)")
    if array.max() <= 1.0:  # [0, 1] floats (or booleans): bring to pixel scale
        array = array * 255.0
    if array.ndim == 1 and array.size == PIXELS:
        array = array.reshape(1, IMAGE_SIZE, IMAGE_SIZE)
    elif array.ndim == 2 and shape[-1] == PIXELS:  # (N, 784): flattened images, as in many tutorials
        array = array.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    elif array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and shape[-1] in (3, 4) and shape[0] >= MIN_SIDE:  # one colour picture
        array = _to_grey(array)[None]
    elif array.ndim == 4 and shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 4 and shape[-1] in (3, 4):
        array = _to_grey(array)
    elif array.ndim != 3:
        array = None
    if array is None or min(array.shape[1:]) < MIN_SIDE:
        raise DataError(f"{path}: shape {shape} is not a layout of images; accepted: {LAYOUTS}")
    names = [str(path)] if len(array) == 1 else [f"{path}[{i}]" for i in range(len(array))]
    return [(name, image, image.shape == (IMAGE_SIZE, IMAGE_SIZE)) for name, image in zip(names, array, strict=True)]


def _to_grey(colour: np.ndarray) -> np.ndarray:
    """(..., 3 or 4) 0-255 -> (...) grey, as Pillow's "L" conversion weighs colours; alpha flattened onto white."""
    grey = colour[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if colour.shape[-1] == 4:
        alpha = colour[..., 3] / 255.0
        grey = grey * alpha + 255.0 * (1 - alpha)
    return grey


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) uint8 image as PNG bytes, exactly as the model sees it before normalization (light on dark):
    predicting the PNG again gives the same answer."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
