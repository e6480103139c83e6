"""Serving under load: `mnist serve` of one trained CNN run (configs/cnn.yaml, 2 epochs) with each engine, onnx
and keras, in turn in the same bench run, on localhost. For each: the seconds from the command to its first
healthy /healthz, the server's resident memory before and after the load, whether TensorFlow is in its process,
then 2,000 POST /v1/predict of one real test digit as a PNG from 8 concurrent clients (requests/s, p50 and p99
latency) and 250 requests of a JSON array of 32 digits each (images/s). Any failed request ends the bench.

Usage: python benchmarks/bench.py --only serve [--data-dir DIR]   (trains the run, ~3 min more)
       python -m benchmarks.serve_load RUN_DIR [--data-dir DIR]   (an existing completed run)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.processes import MNIST, ROOT, run_checked, run_folder

ENGINES = ("onnx", "keras")
REQUESTS = 2_000  # single-image requests per engine
CLIENTS = 8  # concurrent clients, each its own connection
BATCH = 32  # images per JSON request in the batch variant
BATCH_REQUESTS = 250  # JSON requests per engine: 8,000 images
START_TIMEOUT = 240  # seconds for a server to answer /healthz
URL = re.compile(r" on (http://\S+/) ")


def serve_load(args) -> list[dict]:
    """Trains configs/cnn.yaml for 2 epochs on args.data_dir, then measures both engines serving it."""
    with tempfile.TemporaryDirectory() as out:
        command = [MNIST, "train", "--config", str(ROOT / "configs/cnn.yaml"), "--epochs", "2", "--output-dir", out,
                   *(["--data-dir", args.data_dir] if args.data_dir else [])]
        return measure(Path(run_folder(run_checked(command))), args.data_dir)


def measure(run_dir: Path, data_dir: str | None = None) -> list[dict]:
    """One row per engine; printed as a table too."""
    import httpx  # noqa: F401  (the server's own test dependency: said here, before minutes of work)

    png, batch = _digits(run_dir, data_dir)
    # The onnx engine exports the run on its first start: made here, so that start time is the server's own.
    if not (run_dir / "export/model.onnx").is_file():
        run_checked([MNIST, "export", str(run_dir), "--format", "onnx"])
    rows = [_engine_row(run_dir, engine, png, batch) for engine in ENGINES]
    _print_table(rows)
    return rows


def _digits(run_dir: Path, data_dir: str | None) -> tuple[bytes, dict]:
    """A PNG of the run's first test digit, and a JSON body of its first BATCH test digits."""
    from PIL import Image

    from mnist_pipeline.config import load_config
    from mnist_pipeline.inference import split_arrays

    images = split_arrays(load_config(run_dir / "config.yaml"), "test", data_dir)[0]
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    return buffer.getvalue(), {"images": images[:BATCH].tolist()}


def _engine_row(run_dir: Path, engine: str, png: bytes, batch: dict) -> dict:
    import httpx

    started = time.perf_counter()
    process = subprocess.Popen([MNIST, "serve", str(run_dir), "--port", "0", "--engine", engine], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _url(process)
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:  # the first healthy answer: the model is loaded and the server answers
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                _check_alive(process)
                time.sleep(0.02)
            start_seconds = time.perf_counter() - started
            rss_before = _tree_rss_mb(process.pid)
            single = _load(url, REQUESTS, lambda c: c.post("/v1/predict", content=png,
                                                             headers={"Content-Type": "image/png"}), 1)
            many = _load(url, BATCH_REQUESTS, lambda c: c.post("/v1/predict", json=batch), BATCH)
            rss_after = _tree_rss_mb(process.pid)
            tensorflow = _loads_tensorflow(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for name, result in (("single-image", single), (f"{BATCH}-image JSON", many)):
        if result["errors"]:
            sys.exit(f"serve bench: the {engine} engine failed {result['errors']} of its {name} requests; first: "
                     f"{result['first_error']}")
    return {"engine": engine, "start s": round(start_seconds, 2), "RSS MiB before": rss_before,
            "RSS MiB after": rss_after, "TensorFlow loaded": tensorflow,
            "requests/s": round(single["per_second"], 1), "p50 ms": single["p50_ms"], "p99 ms": single["p99_ms"],
            "errors": single["errors"] + many["errors"], f"{BATCH}-image JSON: images/s": round(
                many["per_second"] * BATCH), f"{BATCH}-image JSON: p50 ms": many["p50_ms"]}


def _load(url: str, count: int, send, images_per_request: int) -> dict:
    """`count` requests made by CLIENTS threads, each with its own connection, as fast as answers come back."""
    import httpx

    lock = threading.Lock()
    left = [count]
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as session:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                begin = time.perf_counter()
                try:
                    reply = send(session)
                    ok = reply.status_code == 200 and len(reply.json()["results"]) == images_per_request
                    problem = None if ok else f"HTTP {reply.status_code}: {reply.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - begin
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    ordered = sorted(latencies) or [float("nan")]
    return {"per_second": count / wall, "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def _url(process: subprocess.Popen) -> str:
    """The URL from the server's `serving ... on URL` line."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.05)
        if ready:
            found = URL.search(process.stdout.readline())
            if found:
                return found.group(1)
        _check_alive(process)
    process.kill()
    sys.exit(f"serve bench: the server did not start within {START_TIMEOUT} s")


def _check_alive(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        sys.exit(f"serve bench: the server exited ({process.returncode}): {process.stderr.read()[-2000:]}")


def _tree_rss_mb(pid: int) -> int:
    """Resident memory (VmRSS) of the process and every process under it, in MiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # a process that ended meanwhile
                continue
            children.setdefault(parent, []).append(int(entry))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total_kb += int(found.group(1)) if found else 0
    return round(total_kb / 1024)


def _loads_tensorflow(pid: int) -> bool:
    return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()


def _print_table(rows: list[dict]) -> None:
    from benchmarks.report import _table

    print(f"## Serving under load ({REQUESTS:,} single-PNG requests and {BATCH_REQUESTS} requests of {BATCH} JSON "
          f"images per engine, {CLIENTS} concurrent clients, localhost)\n")
    print("\n".join(_table(rows)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir")
    options = parser.parse_args()
    print(json.dumps(measure(options.run_dir, options.data_dir)))
