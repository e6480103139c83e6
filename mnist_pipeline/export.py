"""`mnist export`: a completed run's model as a SavedModel, a LiteRT (TFLite) file or ONNX, usable without this
package: the file maps raw images to class probabilities with the run's preprocessing inside.

Input `pixels`: (batch, 28, 28) float32 pixel values 0-255, light on dark, any batch size (an image whose pixels are
all 1 or less is taken as 0-1 and scaled: feeding 0-1 floats is the commonest mistake, and would otherwise answer
one class for everything). Output `probabilities`: (batch, 10), computed as `mnist evaluate` computes them
(normalization, softmax, and the mean over each image and its mirror image when the run tested with test_time_flip),
then divided by the run's temperature (`calibration.apply_temperature`; `--no-temperature` leaves it out, and the
metadata's `temperature` says which). Each file carries these facts and the class names as metadata (METADATA_KEY):
ONNX metadata properties, a TFLite metadata buffer, a SavedModel `metadata` signature. All three go through Keras
3's own export (SavedModel via its ExportArchive; LiteRT via TensorFlow's TFLite converter; ONNX via tf2onnx), given
an explicit input signature because subclassed models have none of their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import warnings
from pathlib import Path

from mnist_pipeline import export_labels as labels
from mnist_pipeline import quantize
from mnist_pipeline.errors import ConfigError, OutputError, PipelineError, brief
from mnist_pipeline.export_labels import INPUT_NAME, OUTPUT_NAME
from mnist_pipeline.quantize import Int8
from mnist_pipeline.reports import run_folder
from mnist_pipeline.shapes import IMAGE_SIZE

# format -> (Keras's format name, default path inside the run folder, modules the conversion needs beyond TF)
FORMATS = {
    "savedmodel": ("tf_saved_model", "export/savedmodel", ()),
    "tflite": ("litert", "export/model.tflite", ()),
    "onnx": ("onnx", "export/model.onnx", ("tf2onnx", "onnx")),
}
EXTRA_HINT = "pip install -e '.[export]'"
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}  # what the converters need on the files they write


def check_format(fmt: str) -> None:
    """Refuse a format whose converter is not installed, before anything loads (exit 2)."""
    missing = [module for module in FORMATS[fmt][2] if not installed(module)]
    if missing:
        raise ConfigError(f"export to {fmt} needs {' and '.join(missing)}, from the export extra: {EXTRA_HINT}")


def installed(module: str) -> bool:
    """Whether `module` can be imported here (a converter or runtime of the export extra)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (blocked)
        return False


EXPORT_PRECISION = "float32"  # what the converters take (tf2onnx: float32 policies only)


def precision_note(trained_precision: str | None) -> str | None:
    """What to tell the user about an export of a run trained under `trained_precision` (metrics.json's
    `precision`): exports compute in float32, so a bfloat16 run's exported probabilities differ from its own."""
    if trained_precision in (None, EXPORT_PRECISION):
        return None
    return (f"note: this run trained in {trained_precision} and the export computes in {EXPORT_PRECISION}: its "
            f"probabilities differ from the run's by up to ~1e-2 (docs/guide/predict-export.md, \"Use the model "
            f"elsewhere\")")


def default_output(run_dir: Path, fmt: str, int8: Int8 | None = None) -> Path:
    path = run_dir / FORMATS[fmt][1]
    return quantize.default_path(path, fmt) if int8 is not None else path


def export_run(run_dir: str | Path, fmt: str, output: str | Path | None = None, calibrated: bool = True,
               int8: Int8 | None = None, say=lambda line: None) -> Path:
    """Write the run's exported model to `output` (default: inside the run folder, see FORMATS); return it.
    With `calibrated`, its probabilities are divided by the run's temperature, as `mnist predict` divides them.
    With `int8`, the model is quantized (quantize.py), and `say` gets its scores and any warning. Never replaces
    an existing file or folder, and never leaves half an export behind."""
    check_format(fmt)
    if int8 is not None:
        quantize.check_options(fmt, int8.max_drop)
    target = Path(output) if output is not None else default_output(run_folder.run_folder(run_dir), fmt, int8)
    other = next((name for name, suffix in SUFFIXES.items() if name != fmt and suffix == target.suffix.lower()), None)
    if other:
        fix = f"end it with {SUFFIXES[fmt]}" if fmt in SUFFIXES else "drop the suffix (a SavedModel is a folder)"
        raise ConfigError(f"--output {target}: its suffix names another format than {fmt}; {fix} or pass "
                          f"--format {other}")
    if output is not None and fmt in SUFFIXES and target.is_dir():  # a folder to write the file into, as cp does
        target = target / default_output(target, fmt, int8).name
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} already exists; remove it or pass another --output")
    if target.parent.exists() and not target.parent.is_dir():  # a file where the folder should be
        raise ConfigError(f"{target.parent} is a file, not a folder; move it away or pass another --output")
    if output is not None and not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder; create it or pass another --output")
    from mnist_pipeline.inference import load_run
    from mnist_pipeline.runtime import StopAtOnce

    with StopAtOnce(f"the {fmt} export stopped; nothing was written to {target}"):
        run = load_run(run_dir, precision=EXPORT_PRECISION)  # refuses a run that is not completed
        made_parent = not target.parent.is_dir()
        try:
            target.parent.mkdir(exist_ok=True)  # the run's own export/ folder
            lock = _ExportLock(target)
        except OSError as exc:
            if made_parent:
                with contextlib.suppress(OSError):
                    target.parent.rmdir()
            raise OutputError(f"{target}: cannot write into {target.parent} ({exc.strerror or brief(exc)}); "
                              f"fix its permissions or pass another --output") from None
        try:
            _export_locked(run, fmt, target, calibrated, int8, say)
        finally:
            lock.release()
            if made_parent:  # nothing was written: leave the run folder as it was
                with contextlib.suppress(OSError):
                    target.parent.rmdir()
    return target


def _export_locked(run, fmt: str, target: Path, calibrated: bool, int8: Int8 | None, say) -> None:
    """The export itself, holding the target's lock: into a temporary name beside it, then renamed."""
    images = quantize.run_images(run.config, int8.data_dir) if int8 is not None else None  # missing data: at once
    temperature = run.temperature(calibrated)
    # An int8 graph takes 0-255 pixels only: quantized at a step of about one grey level, 0-1 floats lose their
    # detail (ONNX's answers moved by up to 0.9 in probability), and LiteRT's int8 graph aborted on the 0-1 test.
    unit_floats = int8 is None
    serving = _serving_model(run, temperature, scale_unit_floats=unit_floats)
    tmp = run_folder.temporary_name(target)
    tmp = tmp.with_name(tmp.name + SUFFIXES.get(fmt, ""))  # the converters look at the suffix, not the target's
    metadata = {**labels.metadata(run, unit_floats), "temperature": temperature,
                "unsure_below": labels.finite(run.unsure_below(calibrated))}  # for the probabilities it gives
    try:
        if fmt == "savedmodel":
            _quietly(lambda: labels.write_saved_model(serving, tmp, metadata, _signature()))
        elif int8 is not None:
            def convert(path: Path, **options):
                _quietly(lambda: serving.export(str(path), format=FORMATS[fmt][0], input_signature=_signature(),
                                                verbose=False, **options))
            scores = quantize.quantized_export(fmt, tmp, convert, images, int8, say)
            labels.label(fmt, tmp, {**metadata, "quantization": scores.to_dict()})
        else:
            _quietly(lambda: serving.export(str(tmp), format=FORMATS[fmt][0], input_signature=_signature(),
                                            verbose=False))
            labels.label(fmt, tmp, metadata)
        if target.exists() or target.is_symlink():  # made meanwhile by something that is not an export
            raise ConfigError(f"{target} appeared while the export was running; remove it or pass another --output")
        os.replace(tmp, target)
    except BaseException as exc:  # a signal (StopNow) too: no temporary is left behind
        _remove(tmp)
        if isinstance(exc, PipelineError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write the {fmt} export ({exc.strerror or brief(exc)}); free some "
                              f"space or fix the permissions") from None
        raise PipelineError(f"{run.run_dir}: the {fmt} export failed ({type(exc).__name__}: {brief(exc)})") from None


class _ExportLock:
    """An exclusive lock on one export target (a hidden file beside it), so that two exports of one run at
    once give a clear refusal instead of one replacing the other's files (or failing on them)."""

    def __init__(self, target: Path):
        import fcntl

        self.path = target.with_name(f".{target.name}.export-lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"another export of this run is writing {target}; wait for it to finish, or pass "
                              f"another --output") from None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: a waiting export then makes a fresh lock file
        os.close(self.fd)


def _signature():
    import tensorflow as tf

    return [tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32, name=INPUT_NAME)]


def _serving_model(run, temperature: float = 1.0, scale_unit_floats: bool = True):
    """The run's model wrapped as raw pixels -> probabilities: `Normalization.standardize` and
    `evaluation.class_probabilities`, the code the run was tested with, inside the graph, then the
    temperature as `calibration.apply_temperature` applies it."""
    import keras
    import tensorflow as tf

    from mnist_pipeline.calibration import SMALLEST_PROBABILITY
    from mnist_pipeline.evaluation import class_probabilities

    normalization, flip, model = run.normalization, run.config.data.augmentation.test_time_flip, run.model

    class Serving(keras.Model):
        def call(self, pixels):  # (batch, 28, 28) float32, 0-255
            if scale_unit_floats:
                unit_scale = tf.reduce_max(pixels, axis=[1, 2], keepdims=True) <= 1.0  # 0-1 floats: scale them
                pixels = tf.where(unit_scale, pixels * 255.0, pixels)
            x = normalization.standardize(tf.expand_dims(pixels, -1) / 255.0)
            probabilities = class_probabilities(model, x, flip)
            if temperature != 1.0:  # as calibration.apply_temperature
                floored = tf.maximum(probabilities, SMALLEST_PROBABILITY)
                probabilities = tf.nn.softmax(tf.math.log(floored) / temperature)
            return {OUTPUT_NAME: probabilities}

    serving = Serving()
    serving(keras.ops.zeros((1, IMAGE_SIZE, IMAGE_SIZE)))  # builds it: Keras exports only built models
    return serving


def _quietly(action) -> None:
    """Run a converter with its prints and warnings held back: the CLI prints one line of its own."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        action()


def _remove(path: Path) -> None:
    """Remove a temporary export; never raises (it runs inside error handlers, whose error is the one to say)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
