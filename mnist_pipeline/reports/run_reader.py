"""Reading a run folder's files back, checked: every damaged, missing or foreign file is a one-line
RunFolderError that names it and says what to do, never a KeyError three calls later.

Sizes are bounded (a run's JSON is kilobytes; history has at most 10,000 epochs), so a hostile file cannot
make a reader spend unbounded memory or time. NumPy only, no TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.bounded_reads import MiB, load_npz, read_limited
from mnist_pipeline.errors import DataError, RunFolderError, brief, plural, quote
from mnist_pipeline.reports import run_folder
from mnist_pipeline.shapes import IMAGE_SIZE, PIXELS

JSON_LIMIT = 4 * MiB
HISTORY_LIMIT = 8 * MiB
REPORT_DATA_LIMIT = 1024 * MiB  # test probabilities of up to ~20M examples
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")  # pruned: a sweep trial stopped early
# A status as a sentence says it ("the run failed", "was interrupted"): (verb before it, the status word).
_STATUS_VERBS = {"failed": "", "interrupted": "was ", "pruned": "was ", "running": "is ", "completed": "is "}
# JSON's names for what a file holds ("an array", "a string"), not Python's ("list", "str").
_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def status_phrase(status: str, bold: bool = False) -> str:
    """How a sentence says a run's status: "failed", "was interrupted", "is running" (the status word in
    Markdown bold with `bold`)."""
    word = f"**{status}**" if bold else status
    return f"{_STATUS_VERBS.get(status, 'is ')}{word}"


def damaged(path: Path, problem: str) -> RunFolderError:
    """The error for a run file that is not what `mnist train` wrote, with what to do about it."""
    run_dir = next((p for p in path.parents if run_folder.is_run_folder(p)), path.parent)
    if path.name == run_folder.CONFIG:
        fix = "the run cannot be reproduced from it; train again from the original config file"
    elif path.name == run_folder.ROBUSTNESS:  # derived from the model: scoring again replaces it (the damaged
        #                                       one is set aside as robustness-<time>.json, not lost)
        fix = f"score the run again (`mnist evaluate {run_dir} --corruptions`)"
    else:
        fix = f"train the run again (`mnist train --config {run_dir / run_folder.CONFIG}` reproduces it)"
    return RunFolderError(f"{path}: {problem}; {fix}", path)


def read_json(path: Path, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """A JSON object from a run file."""
    try:
        data = json.loads(read_limited(path, limit, "a JSON file").decode("utf-8"))
    except DataError as exc:
        raise damaged(path, str(exc).removeprefix(f"{path}: ")) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise damaged(path, f"not valid JSON ({brief(exc)})") from None
    if not isinstance(data, dict):
        raise damaged(path, f"expected a JSON object, found {_JSON_KINDS.get(type(data), type(data).__name__)}")
    return data


def field(data: dict, path: Path, key: str, kind: type | tuple[type, ...], check=None) -> Any:
    """data[key], which must be of `kind` (bool is not a number) and pass `check`."""
    value = data.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if key not in data or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise damaged(path, f"'{key}' is missing or not {' or '.join(_JSON_KINDS.get(k, k.__name__) for k in kinds)}")
    if check is not None and not check(value):
        raise damaged(path, f"'{key}' has an impossible value {quote(value)}")
    return value


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / run_folder.STATUS
    data = read_json(path)
    field(data, path, "status", str, lambda s: s in STATUSES)
    for key, kind in (("started", str), ("pid", int), ("error", str)):
        if key in data:
            field(data, path, key, kind)
    return data


def _finite(x: float) -> bool:
    return math.isfinite(x)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json with every number the commands and the report use checked."""
    path = run_dir / run_folder.METRICS
    data = read_json(path)
    tested = field(data, path, "tested", bool) if "tested" in data else True  # runs before sweeps: always tested
    test = ("test",) if tested else ()  # a sweep's trial has no test numbers
    for key in (*(f"{t}_loss" for t in test), "best_val_loss", "train_seconds", "wall_seconds"):
        field(data, path, key, float, lambda x: x >= 0 or math.isnan(x))
    for key in (*(f"{t}_accuracy" for t in test), "best_val_accuracy"):
        field(data, path, key, float, lambda x: 0 <= x <= 1)
    epochs = field(data, path, "epochs", int, lambda n: 1 <= n <= 10_000)
    field(data, path, "best_epoch", int, lambda n: 1 <= n <= epochs)
    field(data, path, "parameters", int, lambda n: n > 0)
    field(data, path, "seed", int)
    for key in ("model", "device", "data_source"):
        field(data, path, key, str)
    field(data, path, "split_sizes", dict, lambda d: all(isinstance(v, int) and v >= 0 for v in d.values()))
    field(data, path, "versions", dict, lambda d: all(isinstance(v, str) for v in d.values()))
    if not tested:  # no test split, so no confusion matrix or per-class table either
        return data
    confusion = field(data, path, "confusion_matrix", list)
    try:
        matrix = np.asarray(confusion, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        matrix = np.zeros((0,))
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0 or (matrix < 0).any():
        raise damaged(path, "'confusion_matrix' is not a square matrix of counts")
    rows = field(data, path, "per_class", list)
    if len(rows) != len(matrix) or not all(
            isinstance(r, dict) and isinstance(r.get("class"), str) and isinstance(r.get("support"), int)
            and all(isinstance(r.get(k), (int, float)) for k in ("precision", "recall", "f1")) for r in rows):
        raise damaged(path, "'per_class' does not hold one row (class, precision, recall, f1, support) per class")
    if "calibration" in data:  # runs from before calibration was measured have none
        _check_calibration(field(data, path, "calibration", dict), path)
    return data


CALIBRATION_SCORES = ("accuracy", "ece", "mce", "nll", "brier")


def _check_calibration(calibration: dict, path: Path) -> None:
    """metrics.json's calibration block: a usable temperature, and the test scores the report and compare show."""
    def number(value, check) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and check(value)

    temperature = calibration.get("temperature")
    if not number(temperature, lambda t: 0 < t < 1e3):
        raise damaged(path, f"'calibration.temperature' is missing or not a positive number ({quote(temperature)})")
    if not number(calibration.get("unsure_below"), lambda x: x >= 0):
        raise damaged(path, "'calibration.unsure_below' is missing or not a number")
    for key in ("test_before", "test_after"):
        scores = calibration.get(key)
        if not isinstance(scores, dict) or not all(number(scores.get(k), lambda x: x >= 0) for k in CALIBRATION_SCORES):
            raise damaged(path, f"'calibration.{key}' does not hold the scores {', '.join(CALIBRATION_SCORES)}")


def temperature(metrics: dict[str, Any]) -> float | None:
    """The run's fitted temperature (read_metrics checked it), or None for a run from before calibration."""
    calibration = metrics.get("calibration")
    return float(calibration["temperature"]) if isinstance(calibration, dict) else None


def read_robustness(run_dir: Path) -> dict[str, Any] | None:
    """robustness.json (`mnist evaluate --corruptions`), checked; None when the run was never so scored."""
    path = run_dir / run_folder.ROBUSTNESS
    if not path.exists():
        return None
    data = read_json(path)

    def scored(row) -> bool:
        return isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
                                             and math.isfinite(row[k]) and row[k] >= 0 for k in ("accuracy", "ece"))

    rows = field(data, path, "corruptions", list, lambda rows: len(rows) > 0)
    if not all(scored(r) and isinstance(r.get("name"), str) for r in rows) or not scored(data.get("clean")):
        raise damaged(path, "a corruption's or the clean split's accuracy and ECE are missing or not numbers")
    for key in ("mean_accuracy", "mean_ece"):
        field(data, path, key, float, lambda x: math.isfinite(x) and x >= 0)
    field(data, path, "seed", int)
    field(data, path, "examples", int, lambda n: n > 0)
    examples = field(data, path, "example_images", dict)
    for name in ("clean", *(r["name"] for r in rows)):
        try:
            image = np.asarray(examples.get(name), dtype=np.float64)
        except (ValueError, TypeError):
            image = np.zeros(0)
        if image.shape != (IMAGE_SIZE, IMAGE_SIZE) or not np.isfinite(image).all():
            raise damaged(path, f"'example_images' has no {IMAGE_SIZE}x{IMAGE_SIZE} image for {quote(name)}")
    return data


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv: the columns `mnist train` writes, epochs 1, 2, ... in order."""
    path = run_dir / run_folder.HISTORY
    try:
        text = read_limited(path, HISTORY_LIMIT, "a history file").decode("utf-8")
    except DataError as exc:
        raise damaged(path, str(exc).removeprefix(f"{path}: ")) from None
    except UnicodeDecodeError:
        raise damaged(path, "not a text file") from None
    reader = csv.reader(io.StringIO(text))
    if tuple(next(reader, ())) != run_folder.HISTORY_COLUMNS:
        raise damaged(path, f"the header is not {','.join(run_folder.HISTORY_COLUMNS)}")
    rows = []
    for number, cells in enumerate(reader, start=1):
        try:
            if len(cells) != len(run_folder.HISTORY_COLUMNS) or int(cells[0]) != number:
                raise ValueError
            rows.append({"epoch": number, **{k: float(v) for k, v in zip(run_folder.HISTORY_COLUMNS[1:], cells[1:],
                                                                        strict=True)}})
        except ValueError:
            raise damaged(path, f"row {number + 1} is not epoch {number} followed by six numbers") from None
    return rows


def read_normalization(run_dir: Path) -> dict[str, Any]:
    path = run_dir / run_folder.NORMALIZATION
    data = read_json(path)
    field(data, path, "method", str, lambda m: m in ("scale", "standardize"))
    field(data, path, "mean", float, _finite)
    field(data, path, "std", float, lambda s: _finite(s) and s > 0)
    return {k: data[k] for k in ("method", "mean", "std")}


def read_model_summary(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / run_folder.MODEL_SUMMARY
    layers = field(read_json(path), path, "layers", list)
    for layer in layers:
        if not (isinstance(layer, dict) and isinstance(layer.get("name"), str) and isinstance(layer.get("type"), str)
                and isinstance(layer.get("output_shape"), list) and isinstance(layer.get("parameters"), int)):
            raise damaged(path, "a layer row lacks name, type, output_shape or parameters")
    return layers


REPORT_ARRAYS = ("test_labels", "test_probabilities", "mistake_indices", "mistake_images", "sample_images",
                 "sample_labels", "samples_augmented", "first_layer_kernel")
# Integrated gradients of the mistakes: absent from runs made before saliency maps were drawn.
SALIENCY_ARRAYS = ("mistake_saliency", "saliency_difference", "saliency_error", "saliency_steps")


def read_report_data(run_dir: Path, num_classes: int) -> dict[str, np.ndarray]:
    """report_data.npz, with the shapes the figures rely on checked."""
    path = run_dir / run_folder.REPORT_DATA
    try:
        data = load_npz(path, REPORT_DATA_LIMIT, REPORT_ARRAYS, optional=SALIENCY_ARRAYS)
    except DataError as exc:
        raise damaged(path, str(exc).removeprefix(f"{path}: ")) from None
    labels, probabilities = data["test_labels"], data["test_probabilities"]
    n = len(labels)
    problems = [
        (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)
         or (n and (labels.min() < 0 or labels.max() >= num_classes)), "test_labels"),
        (probabilities.shape != (n, num_classes) or not np.isfinite(probabilities).all(), "test_probabilities"),
        (data["mistake_indices"].ndim != 1 or not np.issubdtype(data["mistake_indices"].dtype, np.integer)
         or (data["mistake_indices"].size and (data["mistake_indices"].min() < 0
                                               or data["mistake_indices"].max() >= n)), "mistake_indices"),
        (data["mistake_images"].shape != (len(data["mistake_indices"]), IMAGE_SIZE, IMAGE_SIZE), "mistake_images"),
        (data["sample_images"].ndim != 3 or data["sample_images"].shape[1:] != (IMAGE_SIZE, IMAGE_SIZE),
         "sample_images"),
        (data["sample_labels"].shape != data["sample_images"].shape[:1]
         or not np.issubdtype(data["sample_labels"].dtype, np.integer)
         or (data["sample_labels"].size and (data["sample_labels"].min() < 0
                                             or data["sample_labels"].max() >= num_classes)), "sample_labels"),
        (data["samples_augmented"].shape != (), "samples_augmented"),
        (data["first_layer_kernel"].ndim not in (2, 4) or (data["first_layer_kernel"].ndim == 2
                                                           and data["first_layer_kernel"].shape[0] != PIXELS)
         or (data["first_layer_kernel"].ndim == 4 and data["first_layer_kernel"].shape[2] != 1), "first_layer_kernel"),
    ]
    saliency = [name for name in SALIENCY_ARRAYS if name in data]
    if saliency and len(saliency) < len(SALIENCY_ARRAYS):
        problems.append((True, next(name for name in SALIENCY_ARRAYS if name not in data)))
    elif saliency:  # maps of the first k mistakes
        k = len(data["mistake_saliency"])
        problems += [
            (data["mistake_saliency"].shape != (k, IMAGE_SIZE, IMAGE_SIZE) or k > len(data["mistake_indices"])
             or not np.isfinite(data["mistake_saliency"]).all(), "mistake_saliency"),
            (data["saliency_difference"].shape != (k,), "saliency_difference"),
            (data["saliency_error"].shape != (k,), "saliency_error"),
            (data["saliency_steps"].shape != () or not np.issubdtype(data["saliency_steps"].dtype, np.integer),
             "saliency_steps"),
        ]
    bad = [name for wrong, name in problems if wrong]
    if bad:
        raise damaged(path, f"array {bad[0]} does not have the shape or values the report needs")
    return data


SHORT_RUN_FRACTION = 0.25  # under a quarter of its config's steps, a run is not what the config was tuned for


def short_run_note(metrics: dict[str, Any]) -> str | None:
    """"short run: 0.7% of the config's 15 epochs x 54,000 images; ..." when a run trained on under a quarter
    of the images x epochs its config as written plans on the same data (fewer epochs, a smaller subset), else
    None: its accuracy then says little about what the config reaches."""
    budget = metrics.get("budget")
    if not isinstance(budget, dict):
        return None
    values = [budget.get(key) for key in ("epochs", "images", "planned_epochs", "planned_images")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None
    epochs, images, planned_epochs, planned_images = values
    fraction = epochs * images / (planned_epochs * planned_images)
    if fraction >= SHORT_RUN_FRACTION:
        return None
    shown = f"{fraction:.1%}" if fraction < 0.01 else f"{fraction:.0%}"
    return (f"short run: {shown} of the config's {plural(planned_epochs, 'epoch')} x "
            f"{plural(planned_images, 'image')}; expect lower accuracy")
