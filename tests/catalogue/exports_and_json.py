"""Exports (odd targets, held locks, NaN weights) and `--json` of damaged or diverged runs: strict JSON, or one
error line."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np

from catalogue import HELD_LOCKS, Case
from catalogue.builders import on_run, truncate


def taken_file(tmp: Path) -> Path:
    """An --output that already holds something: an export must never replace it."""
    (tmp / "taken.onnx").write_bytes(b"an earlier export")
    return tmp / "taken.onnx"


def copy(which: str, change=None, name: str = "run"):
    def make(tmp, sources):
        folder = shutil.copytree(sources[which], tmp / name)
        if change:
            change(folder)
        return folder
    return make


def export(change=None, *extra, which="completed"):
    """`mnist export` on a copy of a run, changed by `change(copy, tmp)`."""
    def make(tmp, data, completed, resumable, diverged):
        folder = copy(which)(tmp, {"completed": completed, "diverged": diverged})
        if change:
            change(folder, tmp)
        return ["export", folder, *[e(tmp) if callable(e) else e for e in extra]], folder, None
    return make



def hold_export_lock(folder: Path, tmp: Path) -> None:
    """Another export of this run writing its tflite file right now: it holds the target's lock."""
    (folder / "export").mkdir()
    path = folder / "export" / ".model.tflite.export-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD_LOCKS.append((fd, path))


def edit_metrics(**raw):
    """Replace metrics.json values with raw JSON text (NaN, Infinity: what Python's json writes)."""
    def change(folder, tmp=None):
        data = json.loads((folder / "metrics.json").read_text())
        text = json.dumps({**data, **{k: f"@{k}@" for k in raw}})
        for key, value in raw.items():
            text = text.replace(f'"@{key}@"', value)
        (folder / "metrics.json").write_text(text)
    return change


def json_on_run(command: str, which: str, change=None, *extra, json_flag=True):
    def make(tmp, data, completed, resumable, diverged):
        sources = {"completed": completed, "diverged": diverged}
        folder = copy(which)(tmp, sources)
        if change:
            change(folder)
        args = [command, folder]
        if command in ("evaluate", "ensemble"):
            args += ["--data-dir", data]
        if command == "ensemble":
            args.insert(1, copy("completed", name="other")(tmp, sources))
        if command == "predict":
            np.save(tmp / "digit.npy", np.zeros((28, 28), np.uint8) + np.eye(28, dtype=np.uint8) * 255)
            args.append(tmp / "digit.npy")
        return [*args, *extra, *(["--json"] if json_flag else [])], folder, None
    return make


def compare_json(change):
    def make(tmp, data, completed, resumable, diverged):
        folder = shutil.copytree(completed, tmp / "runs" / "changed")
        good = shutil.copytree(completed, tmp / "runs" / "good")
        change(folder)
        return ["compare", folder, good, "--output-dir", tmp / "cmp", "--json"], folder, None
    return make


def has_null_with_reason(*keys):
    """A check of the JSON: `keys` are null, and `null_reasons` says why (compare: in the changed run's row)."""
    def check(value):
        node = next(r for r in value["runs"] if r["run"] == "changed") if "runs" in value else value
        for key in keys:
            assert node[key] is None, node
            assert key in node["null_reasons"], node
    return check




CASES = [
    # -- export --
    Case("export-unfinished", on_run("export", "resumable", None, "--format", "onnx"), 1,
     ["the run is running", "pick a completed run"]),
    Case("export-model-truncated", on_run("export", "completed", truncate("model.keras", 300), "--format", "tflite"), 1,
     ["model.keras"]),
    Case("export-output-taken", on_run("export", "completed", None, "--format", "onnx", "--output", taken_file), 2,
     ["already exists", "another --output"]),
    Case("export-output-folder-missing", on_run("export", "completed", None, "--format", "onnx", "--output",
                                            lambda tmp: tmp / "no" / "model.onnx"), 2, ["no such folder"]),
    Case("export-output-two-formats", on_run("export", "completed", None, "--format", "onnx", "--format", "tflite",
                                         "--output", lambda tmp: tmp / "m"), 2, ["one --format"]),
    Case("export-unknown-format", on_run("export", "completed", None, "--format", "pt"), 2, ["'pt' is not one of"]),
    Case("export-not-a-run", lambda tmp, *_: (["export", tmp, "--format", "savedmodel"], tmp), 2, ["not a run folder"]),
    # -- exports: odd targets (refused before anything loads or is written) --
    Case("export-default-parent-is-a-file", export(lambda f, t: (f / "export").write_text("mine"), "--format",
                                                      "tflite"),
     2, ["export is a file, not a folder"], None),
    Case("export-output-under-a-file", export(lambda f, t: (t / "afile").write_text("mine"), "--format", "tflite",
                                          "--output", lambda t: t / "afile" / "m.tflite"),
     2, ["afile is a file, not a folder", "another --output"], None),
    Case("export-output-savedmodel-under-a-file", export(lambda f, t: (t / "afile").write_text("x"), "--format",
                                                     "savedmodel", "--output", lambda t: t / "afile" / "sm"),
     2, ["is a file, not a folder"], None),
    Case("export-output-in-proc", export(None, "--format", "tflite", "--output", "/proc/m.tflite"), 1,
     ["/proc/m.tflite", "cannot write into /proc"], None),
    Case("export-output-in-sys", export(None, "--format", "savedmodel", "--output", "/sys/mnist-savedmodel"), 1,
     ["cannot write into /sys"], None),
    Case("export-output-exists", export(lambda f, t: (t / "m.tflite").write_text("x"), "--format", "tflite",
                                    "--output", lambda t: t / "m.tflite"), 2, ["already exists"], None),
    Case("export-concurrent", export(hold_export_lock, "--format", "tflite"), 2,
     ["another export of this run is writing", "model.tflite"], None),
    Case("export-nan-weights", export(None, "--format", "tflite", which="diverged"), 1,
     ["model.keras", "NaN or infinite"], None),
    # -- --json of damaged or diverged runs: strict JSON, or one error line --
    Case("evaluate-json-nan-recorded-loss", json_on_run("evaluate", "completed", edit_metrics(test_loss="NaN")), 0,
     ['"recorded_loss": null'], has_null_with_reason("recorded_loss")),
    Case("evaluate-json-infinite-recorded-loss", json_on_run("evaluate", "completed",
                                                                 edit_metrics(test_loss="Infinity")), 0,
     ['"recorded_loss": null'], has_null_with_reason("recorded_loss")),
    Case("evaluate-json-nan-weights", json_on_run("evaluate", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    Case("evaluate-nan-weights", json_on_run("evaluate", "diverged", json_flag=False), 1, ["model.keras"], None),
    Case("predict-json-nan-weights", json_on_run("predict", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    Case("predict-nan-weights", json_on_run("predict", "diverged", json_flag=False), 1, ["model.keras"], None),
    Case("ensemble-json-nan-weights", json_on_run("ensemble", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    Case("compare-json-nan-test-loss", compare_json(edit_metrics(test_loss="NaN")), 0, ['"test_loss": null'],
     has_null_with_reason("test_loss")),
    Case("compare-json-infinite-train-seconds", compare_json(edit_metrics(train_seconds="Infinity")), 0,
     ['"train_seconds": null'], has_null_with_reason("train_seconds")),
    Case("predict-json-good-run", json_on_run("predict", "completed"), 0, ['"prediction"'], None),
]
