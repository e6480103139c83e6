"""The server's FastAPI application: the draw page at `/`, the API under `/v1/`, `/healthz`, and the OpenAPI
pages (`/docs`, `/redoc`, `/openapi.json`) with their scripts served from here, not from a CDN.

Safety is in the application, whatever runs it: a body past `max_body_bytes` is refused before it is read
whole (413), inference runs in at most `workers` threads at once (others wait their turn), and every error is
JSON `{"detail": "one message"}` with a 4xx code, as FastAPI's own errors are. An unexpected failure answers 500
with one message and one log line; the server goes on.
"""

from __future__ import annotations

import base64
import logging
from importlib import resources

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mnist_pipeline import __version__
from mnist_pipeline.errors import brief
from mnist_pipeline.inference import Prediction, answer
from mnist_pipeline.serve import inputs, tf_serving
from mnist_pipeline.serve.engines import ModelCard, OnnxEngine

log = logging.getLogger("mnist_pipeline.serve")
MiB = 1 << 20
MAX_BODY_BYTES = 20 * MiB  # a phone's JPEG is 2-12 MB; an .npy of 1,024 float32 images 3.2 MB
DRAIN_BYTES = 64 * MiB  # of a refused body read and dropped so that its client sees the 413 (BodyLimit._drain)
WORKERS = 2  # requests prepared and classified at once; the others wait in line
PAGES = ("the page is /, the API POST /v1/predict, GET /v1/model and GET /healthz (and TF Serving's "
         "/v1/models/NAME:predict), its reference /docs")
# The draw page loads nothing from elsewhere, and nothing else may run in it.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def create_app(engine: OnnxEngine, max_body_bytes: int = MAX_BODY_BYTES, workers: int = WORKERS,
               allowed_origins: tuple[str, ...] = ()) -> FastAPI:
    """The application serving `engine`. `allowed_origins`: web pages elsewhere whose scripts may call the API
    (CORS); none by default, so only this server's own page can read its answers in a browser."""
    card: ModelCard = engine.card
    app = FastAPIOffline(title="mnist-pipeline", version=__version__,
                         description=f"Classify {card.dataset} images with run {card.run} ({card.engine}).")
    limiter = anyio.CapacityLimiter(workers)
    page = resources.files("mnist_pipeline.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def draw_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})

    @app.api_route("/healthz", methods=["GET", "HEAD"], summary="Liveness: the model is loaded and the server answers.")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", summary="The served run's facts: dataset, classes, test accuracy, engine, limits.")
    def model_facts() -> dict:
        return {**card.to_dict(), "max_body_bytes": max_body_bytes, "max_images": inputs.MAX_IMAGES}

    @app.post("/v1/predict", summary="Classify images: a file (raw body or multipart) or JSON 28x28 arrays.",
              openapi_extra={"requestBody": _request_body_schema()})
    async def predict(request: Request, seen: bool = Query(False, description="Add each image as the model saw "
                                                                              "it: a 28x28 PNG data URL.")):
        try:
            read = await _reader(request, card.dataset)
            results = await anyio.to_thread.run_sync(lambda: _classify(engine, read), limiter=limiter)
        except BodyTooLarge:  # BodyLimit answers it
            raise
        except ClientDisconnect:  # the client left mid-upload: no one to answer, nothing failed here
            return _error(400, "the client disconnected before sending its whole body")
        except inputs.InputError as exc:
            return _error(exc.status, str(exc))
        except Exception as exc:  # never a traceback to the client, and the server goes on
            log.error("error: /v1/predict failed: %s: %s", type(exc).__name__, brief(exc))
            return _error(500, f"the server failed on this request ({type(exc).__name__}: {brief(exc)})")
        return {"run": card.run, "engine": card.engine, "temperature": card.temperature,
                "results": [_result(p, seen) for p in results]}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(404, f"no such page: {request.url.path}; {PAGES}")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}; {PAGES}")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    tf_serving.add_routes(app, engine, limiter)
    if allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # outermost: before anything reads the body
    return app


def _classify(engine, read) -> list[Prediction]:
    """Prepare the request's items (as `mnist predict` does) and classify those that are not blank."""
    items = read()
    card = engine.card
    images = [item.image for item in items if item.image is not None]
    probabilities = iter(engine.probabilities(np.stack(images)) if images else [])
    answers = [answer(item, next(probabilities) if item.image is not None else None, card.class_names,
                      card.unsure_below, card.temperature) for item in items]
    if any(not np.all(np.isfinite([p for _, _, p in a.probabilities])) for a in answers):
        raise RuntimeError("the model's probabilities are NaN or infinite: its weights are damaged")
    return answers


def _result(prediction: Prediction, seen: bool) -> dict:
    """One image's answer in `mnist predict --json`'s words: the 10 probabilities in class order, the top class
    and its name, and any warning."""
    ranked = prediction.probabilities
    result = {"file": prediction.source, "prediction": ranked[0][0] if ranked else None,
              "name": ranked[0][1] if ranked else None, "confidence": ranked[0][2] if ranked else None,
              "probabilities": [p for _, _, p in sorted(ranked)] if ranked else None,
              "uncertain": prediction.uncertain, "temperature": prediction.temperature, "warning": prediction.warning}
    if seen:
        from mnist_pipeline.data.images import png_bytes

        result["seen"] = None if prediction.seen is None else (
            "data:image/png;base64," + base64.b64encode(png_bytes(prediction.seen)).decode())
    return result


async def _reader(request: Request, dataset: str):
    """The body read (in the event loop) and a function that makes its items (in a worker thread)."""
    content_type = request.headers.get("content-type", "")
    kind = inputs.media_type(content_type)
    if kind in inputs.FORM_TYPES:
        files = await _form_files(request)
        return lambda: inputs.from_files(files, dataset)
    body = await request.body()
    if kind in inputs.JSON_TYPES:
        return lambda: inputs.from_json(body, dataset)
    return lambda: inputs.from_body(body, content_type, dataset)


async def _form_files(request: Request) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file in a multipart form."""
    try:
        form = await request.form(max_files=inputs.MAX_IMAGES, max_fields=inputs.MAX_IMAGES)
    except (BodyTooLarge, ClientDisconnect):
        raise
    except Exception as exc:  # python-multipart's and Starlette's refusals of a damaged form
        raise inputs.InputError(400, f"malformed multipart form ({brief(exc)}); send the file as a field named "
                                     f"file (curl -F file=@digit.png)") from None
    files = []
    for _, value in form.multi_items():  # several files under one field name: each of them
        if hasattr(value, "read"):  # an UploadFile; plain text fields are ignored
            files.append((value.filename or "upload", await value.read()))
    await form.close()
    return files


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _request_body_schema() -> dict:
    """The three bodies /v1/predict reads, for the OpenAPI page (the route reads the raw request itself)."""
    image = {"type": "string", "format": "binary"}
    grid = {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 28, "maxItems": 28},
            "minItems": 28, "maxItems": 28}
    return {"required": True, "content": {
        "image/png": {"schema": image}, "image/jpeg": {"schema": image}, "application/octet-stream": {"schema": image},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": image}}},
        "application/json": {"schema": {"oneOf": [grid, {"type": "array", "items": grid},
                                                  {"type": "object", "properties": {"images": {
                                                      "type": "array", "items": grid}}}]}}}}


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request whose body is past `max_bytes` gets 413 without being read whole, whether it
    says its length (Content-Length) or streams it (chunked)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await self._refuse(send, declared)
        if int(declared) > self.max_bytes:
            if int(declared) <= self.max_bytes + DRAIN_BYTES:
                await self._drain(receive, 0)
            return await self._refuse(send, declared)
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._drain(receive, received)
                await self._refuse(send, None)

    async def _drain(self, receive, received: int) -> None:
        """Read the rest of a refused body (up to DRAIN_BYTES past the limit) without keeping it: a server that
        answers and closes while the client still sends makes the client's TCP stack drop the answer (a reset)."""
        while received <= self.max_bytes + DRAIN_BYTES:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send, declared: bytes | None) -> None:
        import json

        size = "" if declared is None or not declared.isdigit() else f" ({int(declared) / MiB:,.1f} MiB)"
        message = (f"a body that is not a number of bytes (Content-Length {declared[:40]!r})" if declared is not None
                   and not declared.isdigit() else f"the request body{size} is larger than the "
                   f"{self.max_bytes / MiB:,.0f} MiB this server accepts; send a smaller image (start the server with "
                   f"--max-body-mb to change it)")
        body = json.dumps({"detail": message}).encode()
        status = 400 if declared is not None and not declared.isdigit() else 413
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
