"""`mnist export`: a completed run's model as a SavedModel, a LiteRT (TFLite) file or ONNX, usable without this
package: the file maps raw images to class probabilities with the run's preprocessing inside.

Input `images`: (batch, 28, 28) float32 pixel values 0-255, any batch size. Output: (batch, 10) probabilities,
computed as `mnist evaluate` computes them (normalization, softmax, and the mean over each image and its mirror
image when the run tested with test_time_flip). All three go through Keras 3's own `model.export` (SavedModel via
its ExportArchive; LiteRT via TensorFlow's TFLite converter on that SavedModel; ONNX via tf2onnx), given an
explicit input signature because subclassed models have none of their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import warnings
from pathlib import Path

from mnist_pipeline.errors import ConfigError, OutputError, PipelineError, brief
from mnist_pipeline.reports import run_folder as rf

# format -> (Keras's format name, default path inside the run folder, modules the conversion needs beyond TF)
FORMATS = {
    "savedmodel": ("tf_saved_model", "export/savedmodel", ()),
    "tflite": ("litert", "export/model.tflite", ()),
    "onnx": ("onnx", "export/model.onnx", ("tf2onnx", "onnx")),
}
EXTRA_HINT = "pip install -e '.[export]'"


def check_format(fmt: str) -> None:
    """Refuse a format whose converter is not installed, before anything loads (exit 2)."""
    missing = [module for module in FORMATS[fmt][2] if not _installed(module)]
    if missing:
        raise ConfigError(f"export to {fmt} needs {', '.join(missing)}, from the export extra: {EXTRA_HINT}")


def _installed(module: str) -> bool:
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
            f"probabilities differ from the run's by up to ~1e-2 (README \"Use the model elsewhere\")")


def default_output(run_dir: Path, fmt: str) -> Path:
    return run_dir / FORMATS[fmt][1]


def export_run(run_dir: str | Path, fmt: str, output: str | Path | None = None) -> Path:
    """Write the run's exported model to `output` (default: inside the run folder, see FORMATS); return it.
    Never replaces an existing file or folder, and never leaves half an export behind."""
    from mnist_pipeline.inference import load_run

    check_format(fmt)
    target = Path(output) if output is not None else default_output(rf.run_folder(run_dir), fmt)
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} already exists; remove it or pass another --output")
    if output is not None and not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder; create it or pass another --output")
    run = load_run(run_dir, precision=EXPORT_PRECISION)
    serving = _serving_model(run)
    made_parent = not target.parent.is_dir()
    tmp = rf.temporary_name(target)
    tmp = tmp.with_name(tmp.name + target.suffix)  # the converters look at the suffix
    try:
        target.parent.mkdir(exist_ok=True)  # the run's own export/ folder
        _quietly(lambda: serving.export(str(tmp), format=FORMATS[fmt][0], input_signature=_signature(),
                                        verbose=False))
        os.replace(tmp, target)
    except Exception as exc:
        _remove(tmp)
        if made_parent:
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write the {fmt} export ({exc.strerror or exc}); free some space "
                              f"or fix the permissions") from None
        raise PipelineError(f"{run.run_dir}: the {fmt} export failed ({type(exc).__name__}: {brief(exc)})") from None
    return target


def _signature():
    import tensorflow as tf

    return [tf.TensorSpec((None, 28, 28), tf.float32, name="images")]


def _serving_model(run):
    """The run's model wrapped as raw pixels -> probabilities: `Normalization.standardize` and
    `trainer.class_probabilities`, the code the run was tested with, inside the graph."""
    import keras
    import tensorflow as tf

    from mnist_pipeline.trainer import class_probabilities

    normalization, flip, model = run.normalization, run.config.data.augmentation.test_time_flip, run.model

    class Serving(keras.Model):
        def call(self, images):  # (batch, 28, 28) float32, 0-255
            x = normalization.standardize(tf.expand_dims(images, -1) / 255.0)
            return class_probabilities(model, x, flip)

    serving = Serving()
    serving(keras.ops.zeros((1, 28, 28)))  # builds it: Keras exports only built models
    return serving


def _quietly(action) -> None:
    """Run a converter with its prints and warnings held back: the CLI prints one line of its own."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        action()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
