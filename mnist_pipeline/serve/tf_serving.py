"""TensorFlow Serving's REST API over the served run, so that a client written for TF Serving (serving this
run's `mnist export --format savedmodel`) works against `mnist serve` unchanged.

The model is named after the run's dataset (`mnist`, `fashion_mnist`) or the run itself. As in TF Serving, the
inputs are the export's signature: raw (28, 28) pixel values 0-255 (an image whose pixels are all 1 or less is
taken as 0-1), fed to the model as they are, with none of `mnist predict`'s preparation of photos; the outputs
are the export's probabilities. Errors are `{"error": "..."}`, TF Serving's shape
(https://www.tensorflow.org/tfx/serving/api_rest).
"""

from __future__ import annotations

import json
import logging

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mnist_pipeline.errors import brief
from mnist_pipeline.export_labels import INPUT_NAME, OUTPUT_NAME
from mnist_pipeline.serve.inputs import MAX_IMAGES
from mnist_pipeline.shapes import IMAGE_SIZE

log = logging.getLogger("mnist_pipeline.serve")
SIGNATURE = "serving_default"


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def add_routes(app: FastAPI, engine, limiter: anyio.CapacityLimiter) -> None:
    card = engine.card
    names = {card.dataset, card.run}

    def known(name: str) -> None:
        if name not in names:
            raise _Refused(404, f"Servable not found for request: Latest({name}); this server serves "
                                f"{' or '.join(sorted(names))}")

    @app.get("/v1/models/{name}", summary="TF Serving: the model's status.", tags=["TensorFlow Serving"])
    def status(name: str):
        def work():
            known(name)
            return {"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
        return _answer(work)

    @app.get("/v1/models/{name}/metadata", summary="TF Serving: the model's signature.", tags=["TensorFlow Serving"])
    def metadata(name: str):
        def work():
            known(name)
            pixels = {"dim": [{"size": "-1"}, {"size": str(IMAGE_SIZE)}, {"size": str(IMAGE_SIZE)}]}
            classes = {"dim": [{"size": "-1"}, {"size": str(len(card.class_names))}]}
            signature = {"inputs": {INPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": pixels, "name": INPUT_NAME}},
                         "outputs": {OUTPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": classes, "name": OUTPUT_NAME}},
                         "method_name": "tensorflow/serving/predict"}
            return {"model_spec": {"name": name, "version": "1", "signature_name": ""},
                    "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}}}
        return _answer(work)

    @app.post("/v1/models/{name}:predict", summary="TF Serving: probabilities of raw 28x28 pixel arrays.",
              tags=["TensorFlow Serving"])
    @app.post("/v1/models/{name}/versions/{version}:predict", include_in_schema=False)
    @app.post("/v1/models/{name}/labels/{version}:predict", include_in_schema=False)
    async def predict(name: str, request: Request):
        body = await request.body()

        def work():
            known(name)
            pixels, columnar = _pixels(body)
            probabilities = engine.probabilities(pixels).tolist()
            return {"outputs": probabilities} if columnar else {"predictions": probabilities}

        return await anyio.to_thread.run_sync(lambda: _answer(work), limiter=limiter)


def _answer(work):
    """What `work` returns, or its refusal as TF Serving's `{"error": ...}`; never a traceback."""
    try:
        return work()
    except _Refused as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except Exception as exc:
        log.error("error: a TF Serving request failed: %s: %s", type(exc).__name__, brief(exc))
        return JSONResponse({"error": f"the server failed on this request ({type(exc).__name__}: {brief(exc)})"},
                            status_code=500)


def _pixels(body: bytes) -> tuple[np.ndarray, bool]:
    """(N, 28, 28) float32 pixel values 0-255 of a request in TF Serving's row ("instances") or columnar
    ("inputs") format, and whether it was columnar."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, f"JSON Parse error: {brief(exc)}") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise _Refused(400, "the request must be a JSON object with \"instances\" (row format) or \"inputs\" "
                            "(columnar format): one of them")
    if request.get("signature_name", SIGNATURE) != SIGNATURE:
        raise _Refused(400, f"serving signature name: \"{request['signature_name']}\" not found in signature def; "
                            f"this model has {SIGNATURE}")
    columnar = "inputs" in request
    value = request["inputs"] if columnar else request["instances"]
    if columnar and isinstance(value, dict):
        value = value.get(INPUT_NAME)
    elif not columnar and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        value = [v.get(INPUT_NAME) for v in value]  # named instances: [{"pixels": ...}, ...]
    try:
        pixels = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise _Refused(400, f"the {INPUT_NAME} input is not an array of numbers of one shape: send (N, 28, 28) pixel "
                            f"values 0-255") from None
    if pixels.ndim != 3 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(pixels) == 0:
        raise _Refused(400, f"input shape {pixels.shape}: the {INPUT_NAME} input takes (N, 28, 28) pixel values 0-255")
    if len(pixels) > MAX_IMAGES:
        raise _Refused(400, f"{len(pixels):,} images in one request, more than the {MAX_IMAGES:,} allowed")
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise _Refused(400, "pixel values must be finite numbers from 0 to 255 (or 0 to 1)")
    unit_scale = pixels.reshape(len(pixels), -1).max(axis=1) <= 1.0  # as the export's graph decides
    pixels[unit_scale] *= 255.0
    return pixels, columnar
