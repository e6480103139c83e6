"""Using finished runs: reload a run's model and normalization, re-evaluate, predict files, ensemble runs.

Imports TensorFlow (through Keras), so the CLI imports it only inside the commands that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline import runtime
from mnist_pipeline.config import CLASS_NAMES, RunConfig, load_config
from mnist_pipeline.data.images import load_digits
from mnist_pipeline.data.prepare import Normalization, stratified_split
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import ConfigError, DataError, PipelineError
from mnist_pipeline.reports import run_folder as rf


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    normalization: Normalization
    metrics: dict
    model: object  # keras.Model


def check_run(run_dir: str | Path) -> Path:
    """The run folder, if it holds a completed run; otherwise a one-line error saying what it is."""
    path = rf.existing_run_dir(run_dir)
    status = rf.read_json(path / rf.STATUS).get("status") if (path / rf.STATUS).exists() else None
    if status != "completed" or not (path / rf.MODEL).exists():
        raise PipelineError(f"{path}: the run is {status or 'not a run folder (no status.json)'}, "
                            f"so it has no final model to use; pick a completed run")
    return path


def load_run(run_dir: str | Path) -> LoadedRun:
    path = check_run(run_dir)
    runtime.prepare_environment()
    import keras

    import mnist_pipeline.models.registry  # noqa: F401 - registers the model classes for deserialization

    config = load_config(path / rf.CONFIG)
    normalization = Normalization(**rf.read_json(path / rf.NORMALIZATION))
    try:
        # safe_mode (the default, kept explicit): refuses files that would run arbitrary code (lambdas).
        model = keras.models.load_model(path / rf.MODEL, safe_mode=True)
    except Exception as exc:
        if "arbitrary code" in str(exc):
            raise PipelineError(f"{path / rf.MODEL}: refused to load: the file holds Python code (a Lambda "
                                f"layer) that would run on load; use only model files this pipeline wrote") from None
        raise PipelineError(f"{path / rf.MODEL}: cannot load the model ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
    return LoadedRun(path, config, normalization, rf.read_json(path / rf.METRICS), model)


def evaluation(run: LoadedRun, phase: str):
    """The Evaluation the run was validated and tested with (test-time flips included)."""
    from mnist_pipeline.trainer import Evaluation

    return Evaluation(run.model, phase, run.config.data.augmentation.test_time_flip)


def split_arrays(config: RunConfig, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The raw (uint8 images, labels) of a run's test or validation split, re-derived from its config."""
    raw = load_raw(config.data.dataset, runtime.data_dir(data_dir or config.data.data_dir))
    if split == "test":
        return raw.x_test, raw.y_test.astype(np.int32), raw.source
    _, val_idx = stratified_split(raw.y_train, config.data.validation_split, config.training.seed)
    return raw.x_train[val_idx], raw.y_train[val_idx].astype(np.int32), raw.source


def evaluate_run(run_dir: str | Path, split: str = "test", data_dir: str | None = None) -> dict:
    """Loss and accuracy of a saved model on its run's split, computed as the trainer computed them."""
    from mnist_pipeline.data.datasets import evaluation_batches

    run = load_run(run_dir)
    images, labels, source = split_arrays(run.config, split, data_dir)
    data = evaluation_batches(run.normalization.apply(images), labels, run.config.training.batch_size)
    loss, accuracy = evaluation(run, split)(data)
    recorded = {"test": ("test_loss", "test_accuracy"), "val": ("best_val_loss", "best_val_accuracy")}[split]
    return {"split": split, "examples": len(labels), "loss": loss, "accuracy": accuracy, "data_source": source,
            "recorded_loss": run.metrics.get(recorded[0]), "recorded_accuracy": run.metrics.get(recorded[1])}


@dataclass(frozen=True)
class Prediction:
    source: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    error: str | None = None


def predict_files(run_dir: str | Path, files: list[str], top_k: int = 3) -> list[Prediction]:
    """Predict each image in `files`, in order; a file that cannot be read gets an error entry."""

    run = load_run(run_dir)
    names = CLASS_NAMES[run.config.data.dataset]
    entries: list[tuple[str, np.ndarray | None, str | None]] = []
    for file in files:
        try:
            entries += [(source, image, None) for source, image in load_digits(file)]
        except DataError as exc:
            entries.append((file, None, str(exc)))
    images = [image for _, image, _ in entries if image is not None]
    if images:
        from mnist_pipeline.trainer import class_probabilities

        x = run.normalization.apply(np.stack(images))  # test-time flips as the run was validated and tested
        probabilities = iter(np.asarray(class_probabilities(run.model, x, run.config.data.augmentation.test_time_flip)))
    predictions = []
    for source, image, error in entries:
        if image is None:
            predictions.append(Prediction(source, [], error))
            continue
        p = next(probabilities)
        predictions.append(Prediction(source, [(names[i], float(p[i])) for i in np.argsort(-p)[:top_k]]))
    return predictions


def ensemble(run_dirs: list[str], data_dir: str | None = None) -> dict:
    """Test accuracy of each member and of the average of their softmax outputs."""
    from mnist_pipeline.data.datasets import evaluation_batches

    if len(run_dirs) < 2:
        raise ConfigError("an ensemble needs at least two run folders")
    runs = [load_run(path) for path in run_dirs]
    first = runs[0]
    for run in runs[1:]:
        if run.config.data.dataset != first.config.data.dataset:
            raise ConfigError(f"{run.run_dir}: dataset {run.config.data.dataset} differs from "
                              f"{first.run_dir.name}'s {first.config.data.dataset}; ensemble runs of one dataset")
        if run.normalization != first.normalization:
            raise ConfigError(f"{run.run_dir}: normalization {run.normalization.describe()} differs from "
                              f"{first.run_dir.name}'s {first.normalization.describe()}; members must share it")
    images, labels, source = split_arrays(first.config, "test", data_dir)
    x = first.normalization.apply(images)
    members, total = [], np.zeros((len(labels), 10), np.float64)
    for run in runs:
        loss, accuracy, probabilities = evaluation(run, "test")(evaluation_batches(x, labels, 256), probabilities=True)
        members.append({"run": run.run_dir.name, "model": run.config.model.name, "test_accuracy": accuracy,
                        "test_loss": loss})
        total += probabilities
    average = total / len(runs)
    ensemble_accuracy = float(np.mean(average.argmax(axis=1) == labels))
    ensemble_loss = float(-np.mean(np.log(np.clip(average[np.arange(len(labels)), labels], 1e-12, None))))
    return {"members": members, "ensemble_accuracy": ensemble_accuracy, "ensemble_loss": ensemble_loss,
            "examples": len(labels), "data_source": source}
