"""`mnist serve`: a run's model behind a draw page and an HTTP API (FastAPI on uvicorn)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from pathlib import Path

import click

from mnist_pipeline.errors import ConfigError, brief

LOOPBACK_NAMES = {"localhost"}
CONNECTIONS = 64  # open connections uvicorn keeps at once (503 past it): with --max-body-mb, what bounds memory


@click.command(short_help="Serve a run's model: a draw-a-digit page and an HTTP API.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Only this machine can connect to 127.0.0.1; 0.0.0.0 opens the server to "
                   "the network (there is no authentication).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one (printed).")
@click.option("--engine", type=click.Choice(["onnx", "keras"]), default="onnx", show_default=True,
              help="onnx: the run's ONNX export in onnxruntime (made first if missing; no TensorFlow in the "
                   "server). keras: the run's model.keras in TensorFlow.")
@click.option("--model", "model_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="An ONNX file of this run to serve instead of export/model.onnx, e.g. export/model.int8.onnx.")
@click.option("--max-body-mb", default=20, show_default=True, type=click.IntRange(1, 1024),
              help="Largest request body accepted; larger ones get 413.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Requests prepared and classified at once; the others wait their turn.")
@click.option("--allow-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
              help="A web page origin (e.g. http://localhost:3000) whose scripts may call the API (CORS); "
                   "repeatable. None by default.")
@click.option("--access-log", is_flag=True, help="Print a line for every request (uvicorn's access log).")
def serve(run_dir, host, port, engine, model_file, max_body_mb, workers, allowed_origins, access_log) -> None:
    """Serve a completed run: open http://127.0.0.1:8000/ to draw a digit or upload a photo and watch the
    answer; programs POST images to /v1/predict (reference: /docs). Ctrl-C or SIGTERM stops it cleanly.

    Example: mnist serve outputs/runs/20261123T120000Z-cnn
    """
    import uvicorn

    from mnist_pipeline.serve.app import MiB, create_app
    from mnist_pipeline.serve.engines import blank_batch, open_engine

    origins = _origins(allowed_origins)
    listener = _listen(host, port)  # before loading the model: a taken port is said at once
    with listener:
        served = open_engine(run_dir, engine, model_file, say=lambda line: click.echo(line, err=True))
        served.probabilities(blank_batch())  # the first request then waits for nothing
        app = create_app(served, max_body_bytes=max_body_mb * MiB, workers=workers, allowed_origins=origins)
        _show_errors_as_lines()
        bound_host, bound_port = listener.getsockname()[:2]
        url = f"http://{_url_host(bound_host)}:{bound_port}/"
        if not _loopback(host):
            click.echo(f"warning: listening on {host}: anyone who can reach port {bound_port} of this machine can "
                       f"use the model (there is no authentication); --host 127.0.0.1 keeps it to this machine",
                       err=True)
        card = served.card
        what = f"{Path(card.file).name}{', int8' if card.quantization else ''}" if model_file else card.model
        click.echo(f"serving {card.run} ({what}, {card.dataset}) with {card.engine} on {url} "
                   f"(API: {url}v1/predict, reference: {url}docs); Ctrl-C stops")
        if card.engine == "onnxruntime":
            note = _precision_note(served.run_dir)
            if note:
                click.echo(note, err=True)
        sys.stdout.flush()
        config = uvicorn.Config(app, log_level="warning", access_log=access_log, limit_concurrency=CONNECTIONS,
                                timeout_graceful_shutdown=10, server_header=False)
        with _stop_signals() as stopped_by:
            uvicorn.Server(config).run(sockets=[listener])
    click.echo(f"server stopped ({stopped_by[0] if stopped_by else 'done'})", err=True)


class _Stopped(Exception):
    pass


@contextlib.contextmanager
def _stop_signals():
    """Ctrl-C and SIGTERM end the server normally (exit 0): uvicorn catches them, finishes the requests under
    way, then raises the signal again once it has shut down, which lands here. Yields the list the name of the
    signal is put into."""
    stopped_by: list[str] = []

    def stop(signum, _frame):
        stopped_by.append(signal.Signals(signum).name)
        raise _Stopped

    kept = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopped_by
    except _Stopped:
        pass
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line error (taken port, unknown address, no permission)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({brief(exc)}); use 127.0.0.1, or "
                          f"0.0.0.0 for every interface") from None
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except PermissionError:
        raise ConfigError(f"--port {port}: this user may not listen on it (ports below 1024 need root); pass "
                          f"--port 8000 or another above 1024") from None
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE
            raise ConfigError(f"--port {port}: already in use (another server?); pass another --port, or --port 0 "
                              f"for any free one") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or brief(exc)})") from None


def _origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """Each --allow-origin as CORS compares it (scheme://host[:port], no path), or a one-line refusal."""
    from urllib.parse import urlsplit

    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/")):
            raise ConfigError(f"--allow-origin {origin}: not an origin; write it as scheme://host[:port], e.g. "
                              f"http://localhost:3000")
    return tuple(origin.rstrip("/") for origin in origins)


def _precision_note(run_dir) -> str | None:
    """A run trained in bfloat16 answers a little differently in its float32 export than in `mnist predict`."""
    from mnist_pipeline.export import precision_note
    from mnist_pipeline.reports import run_reader

    return precision_note(run_reader.read_metrics(run_dir).get("precision"))


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _show_errors_as_lines() -> None:
    """The server's own error lines (a request that failed) as `error: ...` on stderr, without log prefixes."""
    logger = logging.getLogger("mnist_pipeline.serve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a damaged form is the client's 400, not news
