"""How a finished run holds up on damaged inputs: its test split under each MNIST-C corruption
(corruptions.py), scored for accuracy and calibration, written to the run folder's robustness.json.

The corrupted images come from a fixed seed (0 unless asked otherwise), not the run's: every run scored with
one seed sees the very same corrupted images, so `mnist compare` ranks runs on equal terms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from mnist_pipeline.calibration import apply_temperature, scores
from mnist_pipeline.corruptions import CORRUPTIONS, corrupt
from mnist_pipeline.errors import DataError
from mnist_pipeline.reevaluation import run_probabilities
from mnist_pipeline.reports import run_folder

EXAMPLE_INDEX = 0  # the test image shown under every corruption in the report's figure
CORRUPTION_SEED = 0


def score_corruptions(run, images: np.ndarray, labels: np.ndarray, *, seed: int = CORRUPTION_SEED,
                      calibrated: bool = True, on_result: Callable[[dict], None] | None = None) -> dict:
    """robustness.json's content for a loaded run (`inference.LoadedRun`) on raw uint8 test images; each
    corruption's row goes to `on_result` as soon as it is scored."""
    if len(labels) == 0:
        raise DataError("the test split is empty: there is nothing to corrupt and score")
    temperature = run.temperature(calibrated)

    def scored(x: np.ndarray) -> dict:
        _, accuracy, probabilities = run_probabilities(run, x, labels, "test")
        calibration = scores(apply_temperature(probabilities, temperature), labels)
        return {"accuracy": accuracy, "ece": calibration.ece, "nll": calibration.nll}

    clean = scored(images)
    rows, examples = [], {"clean": images[EXAMPLE_INDEX].tolist()}
    for corruption in CORRUPTIONS.values():
        corrupted = corrupt(images, corruption.name, seed)
        row = {"name": corruption.name, "severity": corruption.severity, "summary": corruption.summary,
               **scored(corrupted)}
        rows.append(row)
        examples[corruption.name] = corrupted[EXAMPLE_INDEX].tolist()
        if on_result:
            on_result(row)
    return {"split": "test", "examples": len(labels), "seed": seed, "calibrated": calibrated,
            "temperature": temperature, "clean": clean, "corruptions": rows,
            "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "mean_ece": float(np.mean([r["ece"] for r in rows])),
            "example_index": EXAMPLE_INDEX, "example_images": examples}


def evaluate_corruptions(run_dir: str | Path, data_dir: str | None = None, seed: int = CORRUPTION_SEED,
                         calibrated: bool = True, on_result: Callable[[dict], None] | None = None) -> dict:
    """Score a completed run under every corruption and write robustness.json into its folder, atomically and
    with the seed and data it used (an earlier scoring done another way is kept: `write_robustness`)."""
    from mnist_pipeline.inference import load_run, split_arrays

    run = load_run(run_dir)
    images, labels, source = split_arrays(run.config, "test", data_dir)
    return write_robustness(run.run_dir, score_corruptions(run, images, labels, seed=seed, calibrated=calibrated,
                                                           on_result=on_result), source)


def write_robustness(run_dir: Path, result: dict, data_source: str) -> dict:
    """robustness.json, the scoring the report shows. An earlier one scored another way (another seed, data or
    temperature setting) is kept beside it as robustness-<its time>.json, never overwritten; one scored the
    same way held the same numbers (the scoring is deterministic) and is replaced."""
    now = run_folder.utc_now()
    result = {**result, "data_source": data_source, "scored_at": now.isoformat(timespec="seconds")}
    path = run_dir / run_folder.ROBUSTNESS
    earlier = _settings_of(path)
    if earlier is not None and earlier[0] != tuple(result[key] for key in SETTINGS):
        stamp, n = earlier[1] or now.strftime("%Y%m%dT%H%M%SZ"), 1
        kept = run_dir / f"robustness-{stamp}.json"
        while kept.exists():  # two scorings within one second
            n += 1
            kept = run_dir / f"robustness-{stamp}-{n}.json"
        path.rename(kept)
    run_folder.write_json(path, result)
    return result


SETTINGS = ("seed", "calibrated", "data_source", "examples")  # what makes two scorings of one run differ


def _settings_of(path: Path) -> tuple[tuple, str] | None:
    """(its SETTINGS, its scored_at as a file-name stamp) of an earlier robustness.json; None when there is none.
    A damaged one counts as scored another way, so that it is kept, not overwritten."""
    if not path.is_file():
        return None
    try:
        earlier = json.loads(path.read_text())
        stamp = datetime.fromisoformat(earlier["scored_at"]).strftime("%Y%m%dT%H%M%SZ")
        return tuple(earlier.get(key) for key in SETTINGS), stamp
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return (), ""
