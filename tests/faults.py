"""Run `mnist` with one fault injected at an exact moment: `python tests/faults.py FAULT -- ARGS...`.

Faults (N is an epoch number, 1-based; FILE a path on the disk to fill):
  kill-after-epoch=N        SIGKILL this process once epoch N's checkpoint and history are written
  kill-in-checkpoint=N      SIGKILL it while checkpoint N is half written (before its rename)
  term-after-epoch=N        send it SIGTERM after epoch N (twice with term2-after-epoch=N)
  term-in-first-epoch       send it SIGTERM at the first progress report of epoch 1: before any checkpoint
  fill-after-epoch=N:FILE   fill the disk after epoch N: the next checkpoint write finds it full
  fill-before-model=FILE    fill the disk just before model.keras is saved
  fill-before-report=FILE   fill the disk just before the report is drawn
  without-module=NAME       the Python package NAME is not installed (its import fails)
A test tool only: it wraps the pipeline's own functions, so the product carries no hooks for it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path


def fill_disk(file: str) -> None:
    """Write FILE until the disk is full (ENOSPC), for real: whatever writes next finds no space."""
    block = b"\0" * (64 * 1024)
    with open(file, "ab", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:  # the last few bytes too
            while True:
                f.write(b"\0")
        except OSError:
            pass


def after_epoch(epoch: int, action) -> None:
    from mnist_pipeline.reports import run_folder

    original = run_folder.write_history

    def write_history(run_dir, rows):
        original(run_dir, rows)
        if len(rows) == epoch:
            action()

    run_folder.write_history = write_history


def before(module, name: str, action) -> None:
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        action()
        return original(*args, **kwargs)

    setattr(module, name, wrapped)


def install(fault: str) -> None:
    kind, _, value = fault.partition("=")
    me = os.getpid()
    if kind == "kill-after-epoch":
        after_epoch(int(value), lambda: os.kill(me, signal.SIGKILL))
    elif kind in ("term-after-epoch", "term2-after-epoch"):
        times = 2 if kind.startswith("term2") else 1
        after_epoch(int(value), lambda: [os.kill(me, signal.SIGTERM) for _ in range(times)])
    elif kind == "term-in-first-epoch":
        progress = importlib.import_module("mnist_pipeline.cli.progress")
        original = progress.TrainingProgress.step

        def step(self, where):
            os.kill(me, signal.SIGTERM)
            return original(self, where)

        progress.TrainingProgress.step = step
    elif kind == "kill-in-checkpoint":
        prefix = f".epoch-{int(value):04d}."
        original = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(src).name.startswith(prefix):
                os.kill(me, signal.SIGKILL)
            return original(src, dst, *args, **kwargs)

        os.replace = replace
    elif kind == "fill-after-epoch":
        epoch, _, file = value.partition(":")
        after_epoch(int(epoch), lambda: fill_disk(file))
    elif kind in ("fill-before-model", "fill-before-report"):
        from mnist_pipeline import pipeline, training_run

        module, name = (training_run, "save_model") if kind == "fill-before-model" else (pipeline, "write_report")
        before(module, name, lambda: fill_disk(value))
    elif kind == "without-module":  # as if the package were not installed: importing it fails
        sys.modules[value] = None
    else:
        sys.exit(f"faults.py: unknown fault {fault!r}")


if __name__ == "__main__":
    fault, separator, *args = sys.argv[1:]
    assert separator == "--", __doc__
    install(fault)
    from mnist_pipeline.cli import cli

    cli(args, prog_name="mnist")
