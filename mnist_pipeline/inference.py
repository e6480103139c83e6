"""Using finished runs: reload a run's model and normalization, and predict files with it.

Imports TensorFlow (through Keras), so the CLI imports it only inside the commands that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_pipeline import runtime
from mnist_pipeline.calibration import apply_temperature
from mnist_pipeline.config import CLASS_NAMES, RunConfig, load_config
from mnist_pipeline.data.images import Item, input_files, load_items
from mnist_pipeline.data.prepare import Normalization, stratified_split
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import (
    DataError,
    OutputError,
    PipelineError,
    RunNotCompleted,
    brief,
    clip,
)
from mnist_pipeline.reports import run_folder, run_reader
from mnist_pipeline.reports.metrics import UNSURE_ACCURACY
from mnist_pipeline.shapes import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    normalization: Normalization
    metrics: dict
    model: object  # keras.Model

    @property
    def has_temperature(self) -> bool:
        """False for a run from before calibration was measured."""
        return run_reader.temperature(self.metrics) is not None

    def temperature(self, calibrated: bool = True) -> float:
        """The temperature its probabilities are divided by: the one fitted on validation, or 1 (none) when
        `calibrated` is off or the run has none."""
        return run_reader.temperature(self.metrics) if calibrated and self.has_temperature else 1.0

    def unsure_below(self, calibrated: bool = True) -> float | None:
        """predict's unsure level for the probabilities it uses (None: a run from before unsure levels)."""
        calibration = self.metrics.get("calibration")
        if calibrated and isinstance(calibration, dict):
            return float(calibration["unsure_below"])
        return self.metrics.get("unsure_below")


def load_run(run_dir: str | Path, precision: str | None = None) -> LoadedRun:
    """A completed run's config, normalization, metrics and model. Every file is checked before TensorFlow
    loads, so a damaged run folder is named at once. The model computes under `precision` (a Keras policy),
    by default the one it trained under (metrics.json), so that it reproduces the run's numbers exactly."""
    path = completed_run(run_dir)
    config = load_config(path / run_folder.CONFIG)
    normalization = Normalization(**run_reader.read_normalization(path))
    metrics = run_reader.read_metrics(path)
    if not (path / run_folder.MODEL).is_file():
        raise run_reader.damaged(path / run_folder.MODEL, "missing")
    runtime.prepare_environment()
    import keras

    # The layers take their compute dtype from the policy in force when they are built, at load: a run trained
    # in bfloat16 reloaded in float32 gives probabilities ~1e-3 away from the ones it recorded.
    keras.mixed_precision.set_global_policy(precision or _trained_policy(metrics))
    model = load_model_file(path / run_folder.MODEL)
    try:
        scores = model(np.zeros((1, *IMAGE_SHAPE), np.float32), training=False)
        fits = tuple(scores.shape) == (1, len(CLASS_NAMES[config.data.dataset]))
    except Exception:  # any layer error means the same: not a model of this run
        fits = False
    if not fits:
        raise run_reader.damaged(path / run_folder.MODEL, f"not a model of this run (it does not map a "
                                                 f"{IMAGE_SIZE}x{IMAGE_SIZE} image to {NUM_CLASSES} class scores)")
    weights_finite = all(np.all(np.isfinite(w)) for w in model.get_weights() if np.issubdtype(w.dtype, np.floating))
    if not weights_finite or not np.all(np.isfinite(np.asarray(scores, np.float32))):
        raise non_finite_model(path / run_folder.MODEL)
    return LoadedRun(path, config, normalization, metrics, model)


def completed_run(run_dir: str | Path) -> Path:
    """The run folder, refused (RunNotCompleted, saying how to finish it) unless the run completed."""
    path = run_folder.run_folder(run_dir)
    status = run_reader.read_status(path)["status"]
    if status != "completed":
        finish = f"; {run_folder.next_step(path)}" if status in ("interrupted", "failed") else ""
        raise RunNotCompleted(f"{path}: the run {run_reader.status_phrase(status)}, so it has no final model to use; "
                              f"pick a completed run{finish}", status)
    return path


def non_finite_model(path: Path) -> PipelineError:
    """A model whose answers are NaN or infinite: every "prediction" of it would be meaningless (argmax of NaN
    is class 0)."""
    return run_reader.damaged(path, "its class scores are NaN or infinite (weights that diverged, or were "
                                   "changed): it cannot classify anything; use another run")


def load_model_file(path: Path):
    """A run's model.keras, or a one-line error that says what is wrong with the file."""
    import zipfile

    import keras

    import mnist_pipeline.models  # noqa: F401 - registers the model classes for deserialization

    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise run_reader.damaged(path, "not a readable Keras model file (a .keras file is a zip archive, and this "
                                      "one is not a whole one): it was damaged or replaced")
    try:
        # safe_mode (the default, kept explicit): refuses files that would run arbitrary code (lambdas).
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        if "arbitrary code" in str(exc):
            raise PipelineError(f"{path}: refused to load: the file holds Python code (a Lambda layer) that would "
                                f"run on load; use only model files this pipeline wrote") from None
        raise run_reader.damaged(path, f"cannot load it ({type(exc).__name__}: {brief(exc)})") from None


def _trained_policy(metrics: dict) -> str:
    """The Keras policy a run trained under, where this process can compute it; else float32 (runs from before
    precision was recorded; float16 away from a GPU; bfloat16 under a oneDNN cap that aborts it)."""
    policy = metrics.get("precision")
    if policy == "mixed_bfloat16" and not runtime.cpu().bfloat16_aborts:
        return policy
    if policy == "mixed_float16" and runtime.using_gpu():
        return policy
    return "float32"


def evaluation(run: LoadedRun, phase: str):
    """The Evaluation the run was validated and tested with (test-time flips included)."""
    from mnist_pipeline.evaluation import Evaluation

    return Evaluation(run.model, phase, run.config.data.augmentation.test_time_flip)


def split_arrays(config: RunConfig, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The raw (uint8 images, labels) of a run's test or validation split, re-derived from its config."""
    raw = load_raw(config.data.dataset, runtime.data_dir(data_dir if data_dir is not None else config.data.data_dir))
    if split == "test":
        return raw.x_test, raw.y_test.astype(np.int32), raw.source
    _, val_idx = stratified_split(raw.y_train, config.data.validation_split, config.training.seed)
    return raw.x_train[val_idx], raw.y_train[val_idx].astype(np.int32), raw.source


@dataclass(frozen=True)
class Prediction:
    source: str
    probabilities: list[tuple[int, str, float]]  # every (class, class name, probability), most likely first;
    #                                              empty on error or warning
    error: str | None = None  # the file could not be read
    warning: str | None = None  # nothing to classify (a blank image), or an answer the run is unsure of
    seen: np.ndarray | None = field(default=None, repr=False, compare=False)  # the (28, 28) uint8 image classified
    uncertain: bool | None = None  # the answer's confidence is below the run's unsure level (None: no answer,
    #                                or a run from before unsure levels were recorded)
    temperature: float | None = None  # what the probabilities were divided by (1: none); None: no answer

    @property
    def top(self) -> list[tuple[int, str, float]]:
        return self.probabilities[:3]


def predict_files(run_dir: str | Path, files: list[str], calibrated: bool = True) -> list[Prediction]:
    """Predict each image in `files` (a folder: the images in it), in order; each file stands alone: one that
    cannot be read, whatever the reason, gets an error entry, and a blank image a warning, and the others are
    still predicted. Pictures are prepared by the recipe of the run's dataset. With `calibrated`, probabilities
    are divided by the run's temperature, and the unsure level is the one chosen for them."""
    run = load_run(run_dir)
    dataset = run.config.data.dataset
    names = CLASS_NAMES[dataset]
    unsure_below = run.unsure_below(calibrated)  # None for runs trained before unsure levels were recorded
    items: list[Item | Prediction] = []
    for file, error in input_files(files):
        if error:
            items.append(Prediction(file, [], error=error))
            continue
        try:
            items += load_items(file, dataset)
        except DataError as exc:
            items.append(Prediction(file, [], error=str(exc)))
        except Exception as exc:  # a reader's surprise must cost this file only, never the others
            items.append(Prediction(file, [], error=f"{clip(file)}: cannot read ({type(exc).__name__}: "
                                                    f"{brief(exc)})"))
    images = [d.image for d in items if isinstance(d, Item) and d.image is not None]
    temperature = run.temperature(calibrated)
    probabilities = iter(image_probabilities(run, np.stack(images), calibrated) if images else [])
    return [d if isinstance(d, Prediction) else answer(d, next(probabilities) if d.image is not None else None,
                                                       names, unsure_below, temperature) for d in items]


def image_probabilities(run: LoadedRun, images: np.ndarray, calibrated: bool = True) -> np.ndarray:
    """(N, 10) probabilities of prepared (N, 28, 28) uint8 images, with the test-time flips the run was
    validated and tested with, divided by its temperature when `calibrated`."""
    from mnist_pipeline.evaluation import class_probabilities

    x = run.normalization.apply(images)
    probabilities = np.asarray(class_probabilities(run.model, x, run.config.data.augmentation.test_time_flip))
    probabilities = apply_temperature(probabilities, run.temperature(calibrated))
    if not np.all(np.isfinite(probabilities)):
        raise non_finite_model(run.run_dir / run_folder.MODEL)
    return probabilities


def answer(item: Item, p: np.ndarray | None, names: list[str], unsure_below: float | None,
           temperature: float) -> Prediction:
    """The Prediction for one prepared item and its probabilities `p` (None: a blank item, which has none):
    classes ranked, and a warning when the top one is below the run's unsure level."""
    if p is None:
        return Prediction(item.source, [], warning=item.warning)
    ranked = [(int(i), names[i], float(p[i])) for i in np.argsort(-p)]
    uncertain = None if unsure_below is None else ranked[0][2] < unsure_below
    warning = (f"{item.source}: unsure: {ranked[0][1]} {ranked[0][2]:.2f} or {ranked[1][1]} "
               f"{ranked[1][2]:.2f}; this run's answers below {min(unsure_below, 1.0):.2f} were right less "
               f"than {UNSURE_ACCURACY:.0%} of the time on validation") if uncertain else None
    return Prediction(item.source, ranked, warning=warning, seen=item.image, uncertain=uncertain,
                      temperature=temperature)


def save_seen(predictions: list[Prediction], out_dir: str | Path) -> list[Path | None]:
    """Write each classified image as the model saw it (28x28 PNG) into `out_dir`, named after its file (and
    its index in an array); return one path per prediction, None where there was no image."""
    import re

    from mnist_pipeline.data.images import png_bytes

    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--save-input {folder}: cannot create the folder ({exc.strerror or exc})") from None
    paths, taken = [], set()
    for p in predictions:
        if p.seen is None:
            paths.append(None)
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p.source).name.replace("[", "_").rstrip("]"))
        name, n = f"{stem}.seen.png", 1
        while name in taken:  # two files of one name from different folders
            n += 1
            name = f"{stem}.{n}.seen.png"
        taken.add(name)
        run_folder.write_bytes(folder / name, png_bytes(p.seen))
        paths.append(folder / name)
    return paths
