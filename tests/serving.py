"""A real `mnist serve` process on a free localhost port, for the tests and the load benchmark."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from conftest import start_mnist

URL = re.compile(r" on (http://\S+/) ")


@contextmanager
def served(run_dir: Path, *args, timeout: float = 240):
    """(process, base URL without the final /) of `mnist serve RUN_DIR --port 0 ARGS`: the kernel picks a free
    port and the server prints it. Stopped with SIGTERM on exit; the test may stop it earlier itself."""
    process = start_mnist("serve", run_dir, "--port", "0", *args)
    try:
        yield process, _wait_for_url(process, timeout).rstrip("/")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_url(process: subprocess.Popen, timeout: float) -> str:
    """The URL from the server's `serving ... on URL` line, read as it comes (it exports to ONNX first when the
    run has no export, which takes a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            found = URL.search(line)
            if found:
                return found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}): {process.stderr.read()[-2000:]}")
    process.kill()
    raise AssertionError(f"the server did not start within {timeout:.0f} s")
