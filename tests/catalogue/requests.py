"""Bad requests to `mnist serve`: each must get its 4xx status and one JSON message naming the problem, and
leave the server answering the next request."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalogue.data_files import npy_bytes, npy_lying_header, npz_bytes, png_bomb, png_truncated


@dataclass(frozen=True)
class Request:
    name: str
    method: str
    path: str
    body: bytes | None  # None: no body at all
    headers: dict = field(default_factory=dict)
    files: dict | None = None  # multipart files {field: (name, bytes)}
    status: int = 422
    says: tuple[str, ...] = ()


def _file(writer) -> bytes:
    """The bytes a tests/catalogue writer (png_bomb, ...) puts in a file."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f"
        writer(path)
        return path.read_bytes()


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _grid(value) -> list:
    return [[value] * 28 for _ in range(28)]


JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}
MiB = 1 << 20
DEEP = 100_000  # nesting levels: past Python's recursion limit

CASES = [
    # -- the wrong kind of body --
    Request("text-body", "POST", "/v1/predict", b"hello", {"Content-Type": "text/plain"}, status=415,
            says=("text/plain", "not an image")),
    Request("pdf-body", "POST", "/v1/predict", b"%PDF-1.4\n" + bytes(200), {"Content-Type": "application/pdf"},
            status=415, says=("not a readable image",)),
    Request("json-without-type-malformed", "POST", "/v1/predict", b"[[1, 2", {}, status=400,
            says=("malformed JSON",)),
    Request("html-form-urlencoded-text", "POST", "/v1/predict", b"a=1&b=2",
            {"Content-Type": "application/x-www-form-urlencoded"}, status=415, says=("not a readable image",)),
    Request("empty-body", "POST", "/v1/predict", b"", PNG, status=400, says=("no body",)),
    Request("no-body", "POST", "/v1/predict", None, status=400, says=("no body",)),
    Request("png-truncated", "POST", "/v1/predict", _file(png_truncated), PNG, status=415,
            says=("not a readable image",)),
    Request("png-bomb", "POST", "/v1/predict", _file(png_bomb), PNG, status=413, says=("megapixels",)),
    Request("npz-as-body", "POST", "/v1/predict", npz_bytes(), {"Content-Type": "application/octet-stream"},
            status=415, says=("not a readable image",)),
    Request("npy-lying-header", "POST", "/v1/predict", npy_lying_header(), {}, status=413, says=("MiB",)),
    Request("npy-nan", "POST", "/v1/predict", npy_bytes(np.full((28, 28), np.nan, np.float32)), {},
            says=("NaN",)),
    Request("npy-objects", "POST", "/v1/predict", npy_bytes(np.array([None, 1], dtype=object)), {},
            says=("Python objects",)),
    Request("npy-wrong-layout", "POST", "/v1/predict", npy_bytes(np.zeros((2, 3, 4, 5), np.float32)), {},
            says=("not a layout of images",)),
    # -- JSON --
    Request("json-malformed", "POST", "/v1/predict", b"[[1, 2], [3", JSON, status=400, says=("malformed JSON",)),
    Request("json-not-utf8", "POST", "/v1/predict", b"\xff\xfe[\x00", JSON, status=400, says=("malformed JSON",)),
    Request("json-deep", "POST", "/v1/predict", b"[" * DEEP + b"]" * DEEP, JSON, status=400,
            says=("malformed JSON",)),
    Request("json-wrong-shape", "POST", "/v1/predict", _json([[1, 2, 3]] * 5), JSON, says=("(5, 3)", "28x28")),
    Request("json-ragged", "POST", "/v1/predict", _json([[1] * 28] * 27 + [[1] * 3]), JSON,
            says=("rectangular",)),
    Request("json-strings", "POST", "/v1/predict", _json([["7"] * 28] * 28), JSON, says=("strings",)),
    Request("json-booleans", "POST", "/v1/predict", _json(_grid(True)), JSON, says=("true/false",)),
    Request("json-nulls", "POST", "/v1/predict", _json(_grid(None)), JSON, says=("not numbers",)),
    Request("json-nan", "POST", "/v1/predict", b"[" + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]",
            JSON, says=("NaN",)),
    Request("json-out-of-range", "POST", "/v1/predict", _json(_grid(1000)), JSON, says=("0-255",)),
    Request("json-negative", "POST", "/v1/predict", _json(_grid(-3)), JSON, says=("0-255",)),
    Request("json-object-wrong-key", "POST", "/v1/predict", _json({"image": _grid(0)}), JSON,
            says=('"images"',)),
    Request("json-empty-list", "POST", "/v1/predict", b"[]", JSON, says=("shape (0,)",)),
    Request("json-scalar", "POST", "/v1/predict", b"7", JSON, says=("shape ()",)),
    Request("json-too-many-images", "POST", "/v1/predict", _json([_grid(0)] * 1025), JSON, status=413,
            says=("1,025 images", "1,024")),
    # -- multipart --
    Request("form-without-file", "POST", "/v1/predict", None, files={}, status=400, says=("no file",)),
    Request("form-text-file", "POST", "/v1/predict", None, files={"file": ("notes.txt", b"hello")}, status=415,
            says=("notes.txt", "not a readable image")),
    Request("form-empty-file", "POST", "/v1/predict", None, files={"file": ("empty.png", b"")}, status=400,
            says=("empty.png", "empty")),
    Request("form-broken-boundary", "POST", "/v1/predict", b"--x\r\nContent-Disposition: form-data; name=\"f\"",
            {"Content-Type": "multipart/form-data; boundary=x"}, status=400, says=("multipart",)),
    Request("form-no-boundary", "POST", "/v1/predict", b"abc", {"Content-Type": "multipart/form-data"},
            status=400, says=("multipart",)),
    # -- size --
    Request("body-too-large", "POST", "/v1/predict", bytes(21 * MiB), PNG, status=413, says=("larger than",)),
    # -- routes --
    Request("get-predict", "GET", "/v1/predict", None, status=405, says=("GET is not allowed", "POST /v1/predict")),
    Request("unknown-page", "GET", "/admin", None, status=404, says=("no such page: /admin",)),
    Request("path-traversal", "GET", "/static-offline-docs/../../../../etc/passwd", None, status=404,
            says=("no such page",)),
    Request("bad-query", "POST", "/v1/predict?seen=maybe", _json(_grid(0)), JSON, says=("seen",)),
    Request("delete-model", "DELETE", "/v1/model", None, status=405, says=("DELETE is not allowed",)),
]


def png_of(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()
