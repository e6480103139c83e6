"""What a `POST /v1/predict` body holds, as the prepared items `mnist predict` makes of files.

Three kinds of body, told apart by Content-Type: JSON (one 28x28 image as nested lists, a list of them, or
{"images": ...}), a multipart form (image or .npy files, any field name: what an HTML form and `curl -F` send),
and anything else, read as the bytes of one image or .npy file (`curl --data-binary @digit.png`, `fetch` with a
Blob). Every refusal is an InputError with the HTTP status and one message that names the fix.
"""

from __future__ import annotations

import json

import numpy as np

from mnist_pipeline.data.images import Item, array_items, items_from_bytes
from mnist_pipeline.errors import DataError, NotAnImage, TooLarge, brief, plural
from mnist_pipeline.shapes import IMAGE_SIZE

MAX_IMAGES = 1024  # images in one request: each is prepared and classified while a worker slot is held
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data",)
TEXT_TYPES = ("text/",)  # a text body is never an image: say so rather than "not a readable image"
ACCEPTED = ("an image file (PNG, JPEG, BMP, GIF, WebP, TIFF) or .npy array as the body or in a multipart form, "
            "or JSON: a 28x28 array of pixel values or a list of them")


class InputError(Exception):
    """A request the server refuses: `status` is its HTTP code, the message says what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def from_json(body: bytes, dataset: str) -> list[Item]:
    """Items of a JSON body: pixel values 0-255 (or 0-1), one (28, 28) image or a list of them."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than any image's
        raise InputError(400, f"malformed JSON ({brief(exc)}); send {ACCEPTED}") from None
    if isinstance(value, dict):
        if set(value) != {"images"}:
            raise InputError(422, f"a JSON object must have one key, \"images\"; got {sorted(value)[:5]}")
        value = value["images"]
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged lists
        raise InputError(422, "the JSON images are not a rectangular array: each must be 28 rows of 28 pixel "
                              "values") from None
    if array.dtype.kind not in "iuf":  # strings, booleans, nulls, objects
        raise InputError(422, f"the JSON images hold {_kind(array)}, not numbers; send pixel values 0-255 or 0-1")
    shape = array.shape
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise InputError(422, f"JSON images of shape {shape}; send one 28x28 array of pixel values or a list of "
                              f"them, shape (N, 28, 28)")
    _check_count(len(array))
    return _items(lambda: array_items(array, "image" if len(array) == 1 else "images", dataset))


def from_files(files: list[tuple[str, bytes]], dataset: str) -> list[Item]:
    """Items of uploaded files: (name, bytes) each, an image or an .npy array."""
    if not files:
        raise InputError(400, f"the form holds no file; send {ACCEPTED}")
    items: list[Item] = []
    for name, data in files:
        if not data:
            raise InputError(400, f"{name}: empty (0 bytes); send {ACCEPTED}")
        items += _items(lambda name=name, data=data: items_from_bytes(data, name, dataset))
        _check_count(len(items))
    return items


def from_body(body: bytes, content_type: str, dataset: str) -> list[Item]:
    """Items of a raw body: the bytes of one image or .npy file."""
    if not body:
        raise InputError(400, f"the request has no body; send {ACCEPTED}")
    if body.lstrip()[:1] in (b"[", b"{"):  # JSON sent without its Content-Type (curl -d sends a form's)
        return from_json(body, dataset)
    if media_type(content_type).startswith(TEXT_TYPES):
        raise InputError(415, f"a {media_type(content_type)} body is not an image; send {ACCEPTED}")
    items = _items(lambda: items_from_bytes(body, "body", dataset))
    _check_count(len(items))
    return items


def _items(read) -> list[Item]:
    try:
        return read()
    except TooLarge as exc:
        raise InputError(413, str(exc)) from None
    except NotAnImage as exc:
        raise InputError(415, f"{exc}; send {ACCEPTED}") from None
    except DataError as exc:
        raise InputError(422, str(exc)) from None
    except MemoryError:
        raise InputError(413, "not enough memory to read this input; send a smaller image") from None


def _check_count(count: int) -> None:
    if count > MAX_IMAGES:
        raise InputError(413, f"{plural(count, 'image')} in one request, more than the {MAX_IMAGES:,} allowed; send "
                              f"them in several requests")


def _kind(array: np.ndarray) -> str:
    return {"b": "true/false values", "U": "strings", "S": "strings"}.get(array.dtype.kind, "nulls or mixed values")
