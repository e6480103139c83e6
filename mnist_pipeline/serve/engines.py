"""What computes the server's answers: a run's ONNX export in onnxruntime (the default), or its Keras model.

Both take prepared (N, 28, 28) uint8 images, the ones `mnist predict` makes, and give (N, 10) probabilities as
`mnist predict` gives them (normalization, test-time flips and the run's temperature included). onnxruntime is
the default because the server process then never loads TensorFlow: it starts faster and holds less memory, and
answers as fast or faster (docs/guide/serve.md, "Which engine", measured by `make bench`). The Keras engine needs
no export and serves exactly the model `mnist predict` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import ConfigError, PipelineError, brief
from mnist_pipeline.export import EXTRA_HINT as EXPORT_EXTRA_HINT
from mnist_pipeline.export import installed
from mnist_pipeline.export_labels import INPUT_NAME, METADATA_KEY, OUTPUT_NAME
from mnist_pipeline.reports import run_folder, run_reader
from mnist_pipeline.shapes import IMAGE_SIZE

ENGINES = ("onnx", "keras")


@dataclass(frozen=True)
class ModelCard:
    """The facts about the served model that the page's card and `GET /v1/model` show."""

    run: str
    dataset: str
    model: str
    class_names: list[str]
    test_accuracy: float | None
    trained: str | None  # when the run finished (ISO 8601)
    temperature: float  # what its probabilities are divided by (1: none)
    unsure_below: float | None  # answers below this confidence get a warning (None: a run without the level)
    engine: str  # "onnxruntime" or "keras"
    file: str  # the model file served
    quantization: dict | None = field(default=None)  # an int8 export's scheme and measured accuracy

    def to_dict(self) -> dict:
        return asdict(self)


class OnnxEngine:
    """A run's ONNX export (pixels 0-255 in, probabilities out, everything else inside) in onnxruntime."""

    def __init__(self, path: Path, run_dir: Path):
        self.run_dir = run_dir
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            metadata = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        except KeyError:
            raise ConfigError(f"{path}: an ONNX file without mnist-pipeline's metadata; serve a file that "
                              f"`mnist export --format onnx` wrote") from None
        except Exception as exc:  # onnxruntime's own errors (a damaged or foreign file)
            raise PipelineError(f"{path}: cannot load it in onnxruntime ({brief(exc)}); export it again with "
                                f"`mnist export RUN --format onnx`") from None
        self.card = ModelCard(
            run=metadata["run"], dataset=metadata["dataset"], model=metadata["model"],
            class_names=list(metadata["class_names"]), test_accuracy=metadata.get("test_accuracy"),
            trained=_finished(run_dir), temperature=float(metadata.get("temperature", 1.0)),
            unsure_below=metadata.get("unsure_below"), engine="onnxruntime", file=str(path),
            quantization=metadata.get("quantization"))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32)})
        return probabilities


class KerasEngine:
    """The run's own model.keras, computed as `mnist predict` computes it (loads TensorFlow)."""

    def __init__(self, run_dir: Path):
        from mnist_pipeline.config import CLASS_NAMES
        from mnist_pipeline.inference import load_run

        self.run = load_run(run_dir)
        config = self.run.config
        self.card = ModelCard(
            run=self.run.run_dir.name, dataset=config.data.dataset, model=config.model.name,
            class_names=list(CLASS_NAMES[config.data.dataset]), test_accuracy=self.run.metrics.get("test_accuracy"),
            trained=_finished(run_dir), temperature=self.run.temperature(), unsure_below=self.run.unsure_below(),
            engine="keras", file=str(self.run.run_dir / run_folder.MODEL))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from mnist_pipeline.inference import image_probabilities

        return image_probabilities(self.run, images)


def open_engine(run_dir: str | Path, engine: str = "onnx", model: str | Path | None = None,
                say=print) -> OnnxEngine | KerasEngine:
    """The engine serving a completed run: its Keras model, or an ONNX file (`model`, by default the run's
    export/model.onnx, made first by `mnist export` in a child process when missing, so that this process never
    loads TensorFlow). `say` tells the user about that export."""
    from mnist_pipeline.inference import completed_run

    path = completed_run(run_dir)
    if engine == "keras":
        if model is not None:
            raise ConfigError("--model names an ONNX file, which the onnx engine serves; drop --engine keras")
        return KerasEngine(path)
    if not installed("onnxruntime"):  # said before an export that could not be served anyway
        raise ConfigError(f"serving an ONNX export needs onnxruntime, from the export extra: {EXPORT_EXTRA_HINT}; "
                          f"or pass --engine keras")
    if model is not None:
        model = Path(model)
        if not model.is_file():
            raise ConfigError(f"--model {model}: no such file; pass an .onnx file `mnist export` wrote")
        if model.suffix.lower() != ".onnx":
            raise ConfigError(f"--model {model}: takes an ONNX file (.onnx), as `mnist export --format onnx` "
                              f"writes; a {model.suffix or 'suffix-less'} file is not one")
        engine = OnnxEngine(model, path)
        if engine.card.run != path.name:  # its card would mix two runs' facts
            raise ConfigError(f"--model {model}: an export of run {engine.card.run}, not of {path.name}; serve it "
                              f"with that run's folder, or export this run")
        return engine
    from mnist_pipeline.export import default_output

    exported = default_output(path, "onnx")
    if not exported.is_file():
        say(f"exporting {path.name} to ONNX first (once): {exported}")
        try:
            _export_onnx(path)
        except PipelineError:
            if not exported.is_file():  # else another server of this run exported it meanwhile: use that
                raise
    return OnnxEngine(exported, path)


def _export_onnx(run_dir: Path) -> None:
    """`mnist export RUN --format onnx` in a child process: TensorFlow stays out of the server's."""
    done = subprocess.run([sys.executable, "-m", "mnist_pipeline", "export", str(run_dir), "--format", "onnx"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")] or done.stderr.splitlines()
        reason = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
        raise PipelineError(f"the ONNX export for serving failed: {reason}; or pass --engine keras")


def _finished(run_dir: Path) -> str | None:
    try:
        return run_reader.read_status(run_dir).get("updated")
    except PipelineError:
        return None


def blank_batch() -> np.ndarray:
    """One black image: what the server answers once before it listens, so the first user waits for nothing."""
    return np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
