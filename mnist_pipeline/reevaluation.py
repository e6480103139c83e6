"""Scoring finished runs again: `mnist evaluate` (its split, calibration, and MNIST-C corruptions) and
`mnist ensemble`.

Each run's probabilities are divided by its fitted temperature unless `calibrated` is off; accuracy never
depends on it (calibration.py). Imports TensorFlow (through Keras) inside the functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.calibration import apply_temperature, scores
from mnist_pipeline.errors import ConfigError, RunNotCompleted, plural
from mnist_pipeline.inference import LoadedRun, evaluation, load_run, split_arrays
from mnist_pipeline.reports import run_reader
from mnist_pipeline.shapes import NUM_CLASSES


def _batches(run: LoadedRun, images: np.ndarray, labels: np.ndarray, batch_size: int = 256):
    from mnist_pipeline.data.datasets import evaluation_batches

    return evaluation_batches(images, labels, batch_size, normalization=run.normalization)


def run_probabilities(run: LoadedRun, images: np.ndarray, labels: np.ndarray, split: str, batch_size: int = 256):
    """(loss, accuracy, (N, 10) probabilities) of the run on raw uint8 images, computed as its test was."""
    return evaluation(run, split)(_batches(run, images, labels, batch_size), probabilities=True)


def evaluate_run(run_dir: str | Path, split: str = "test", data_dir: str | None = None,
                 calibrated: bool = True) -> dict:
    """Loss and accuracy of a saved model on its run's split, computed as the trainer computed them (so they
    can be checked against metrics.json), and the calibration of its probabilities on that split."""
    run = load_run(run_dir)
    images, labels, source = split_arrays(run.config, split, data_dir)
    data, evaluate = _batches(run, images, labels, run.config.training.batch_size), evaluation(run, split)
    loss, accuracy, probabilities = evaluate(data, probabilities=True)  # as the test was run
    if split == "val":  # validated during training without gathering probabilities: that step's loss, exactly
        loss, accuracy = evaluate(data)
    recorded = {"test": ("test_loss", "test_accuracy"), "val": ("best_val_loss", "best_val_accuracy")}[split]
    result = {"split": split, "examples": len(labels), "loss": loss, "accuracy": accuracy, "data_source": source,
              "recorded_loss": run.metrics.get(recorded[0]), "recorded_accuracy": run.metrics.get(recorded[1]),
              "recorded_data_source": run.metrics.get("data_source")}
    result["matches"], result["difference"] = agreement(result)
    temperature = run.temperature(calibrated)
    if len(labels):
        result["calibration"] = {"temperature": temperature, "temperature_fitted": run.has_temperature,
                                 **scores(apply_temperature(probabilities, temperature), labels).to_dict()}
    return result


# float32 sums of thousands of per-example losses in another order (another batch layout, kernel or thread
# count) move the mean in its 6th significant digit: 1e-5 relative covers that with room, and is still far
# below any change of weights or data. Accuracy is a count: it must be the same number of examples.
LOSS_TOLERANCE = 1e-5


def agreement(result: dict) -> tuple[bool | None, str]:
    """Whether a re-evaluation reproduces the recorded numbers (None: nothing recorded), and what differs."""
    if result["recorded_accuracy"] is None:
        return None, "no recorded numbers to compare with"
    if not all(isinstance(v, (int, float)) and np.isfinite(v)
               for v in (result["recorded_accuracy"], result["recorded_loss"], result["loss"], result["accuracy"])):
        return None, "not comparable: a recorded or measured number is not finite (NaN or infinite)"
    wrong = round(abs(result["accuracy"] - result["recorded_accuracy"]) * result["examples"])
    loss_off = abs(result["loss"] - result["recorded_loss"]) > LOSS_TOLERANCE * max(abs(result["recorded_loss"]), 1e-12)
    if not wrong and not loss_off:
        return True, f"the same: loss within {LOSS_TOLERANCE:g} relative, the same examples right"
    parts = [f"{plural(wrong, 'example')} classified differently"] if wrong else []
    if loss_off:
        parts.append(f"loss {result['loss']:.6g} vs {result['recorded_loss']:.6g}")
    source = result.get("recorded_data_source")
    now = result["data_source"]
    cause = (f"other data: recorded on {source}, now {now}" if source and source != now
             else "other weights or data than the run had (model.keras or the data files changed?)")
    return False, f"different: {', '.join(parts)}; {cause}"


def ensemble(run_dirs: list[str], data_dir: str | None = None, calibrated: bool = True) -> dict:
    """Test accuracy of each member and of the average of their (temperature-scaled) softmax outputs. Each
    member sees the test images prepared its own way (its normalization.json). A run that is not completed
    (interrupted, failed, still running) is skipped with its reason; a damaged one stops the command, named."""
    twice = next((d for i, d in enumerate(run_dirs) if Path(d).resolve() in {Path(e).resolve() for e in run_dirs[:i]}),
                 None)
    if twice is not None:
        raise ConfigError(f"{twice} is given twice; an ensemble of a model with itself is that model: give each "
                          f"run once")
    runs, skipped = [], []
    for path in run_dirs:
        try:
            runs.append(load_run(path))
        except RunNotCompleted as exc:
            reason = f"the run {run_reader.status_phrase(exc.status)}, so it has no final model"
            skipped.append({"run": Path(path).name, "reason": reason})
    if len(runs) < 2:
        why = "".join(f"; {s['run']} skipped: {s['reason']}" for s in skipped)
        raise ConfigError(f"an ensemble needs at least two completed runs, got {len(runs)}{why}")
    first = runs[0]
    for run in runs[1:]:
        if run.config.data.dataset != first.config.data.dataset:
            raise ConfigError(f"{run.run_dir}: dataset {run.config.data.dataset} differs from "
                              f"{first.run_dir.name}'s {first.config.data.dataset}; ensemble runs of one dataset")
    images, labels, source = split_arrays(first.config, "test", data_dir)
    members, total = [], np.zeros((len(labels), NUM_CLASSES), np.float64)
    for run in runs:
        _, accuracy, probabilities = run_probabilities(run, images, labels, "test")
        probabilities = apply_temperature(probabilities, run.temperature(calibrated))
        member = scores(probabilities, labels) if len(labels) else None
        members.append({"run": run.run_dir.name, "model": run.config.model.name, "test_accuracy": accuracy,
                        "test_loss": member.nll if member else float("nan"),
                        "test_ece": member.ece if member else float("nan"),
                        "temperature": run.temperature(calibrated),
                        "temperature_fitted": run.has_temperature,
                        "normalization": run.normalization.describe()})
        total += probabilities
    average = total / len(runs)
    together = scores(average, labels) if len(labels) else None
    return {"members": members, "skipped": skipped, "calibrated": calibrated,
            "ensemble_accuracy": together.accuracy if together else float("nan"),
            "ensemble_loss": together.nll if together else float("nan"),
            "ensemble_ece": together.ece if together else float("nan"),
            "examples": len(labels), "data_source": source}
