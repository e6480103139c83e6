"""`mnist export --quantize int8`: post-training integer quantization of a run's TFLite or ONNX export,
calibrated on a sample of its training split, scored against the float export on its test split, and refused
when it loses more accuracy than the budget allows.

- LiteRT (TFLite): TensorFlow's converter with `Optimize.DEFAULT` and a representative dataset: int8 weights and
  activations, float32 input and output (clients feed the same pixels as to the float export; the few ops with
  no int8 kernel, such as the temperature's log, stay float).
- ONNX: onnxruntime's static quantization in QDQ format with uint8 activations AND uint8 weights (U8U8).
  onnxruntime's own guide: its x86-64 int8 kernels compute U8S8 (and S8S8, shifted to U8S8) with VPMADDUBSW,
  whose 16-bit intermediate sums can saturate on AVX2 and AVX-512 CPUs without VNNI; U8U8 takes another kernel
  that does not. A model quantized here must answer alike on every CPU class it is shipped to.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.export_labels import INPUT_NAME, OUTPUT_NAME

CALIBRATION_IMAGES = 500  # training images the int8 ranges are measured on (seeded sample)
MAX_ACCURACY_DROP = 1.0  # percentage points of test accuracy an int8 export may lose against the float one
SCORE_BATCH = 256
SCHEMES = {
    "tflite": "int8 weights and activations (LiteRT post-training, representative dataset), float32 input and output",
    "onnx": "int8 static, QDQ, uint8 activations and uint8 weights (U8U8: no saturation on CPUs without VNNI)",
}
SUFFIX = {"tflite": ".int8.tflite", "onnx": ".int8.onnx"}


@dataclass(frozen=True)
class Int8:
    """What `mnist export --quantize int8` was asked: the accuracy budget, and the data to calibrate and score on."""

    max_drop: float = MAX_ACCURACY_DROP  # percentage points
    allow_drop: bool = False  # write it even past the budget (with a warning)
    data_dir: str | None = None  # None: the run's own data source


@dataclass(frozen=True)
class Quantization:
    """What an int8 export carries in its metadata (`quantization`) and what `mnist export` prints."""

    scheme: str
    calibration_images: int
    calibration_split: str
    test_images: int
    test_accuracy: float
    float_test_accuracy: float
    size_bytes: int  # the model without this metadata (which holds the size), like the float one's
    float_size_bytes: int
    max_accuracy_drop: float  # percentage points

    @property
    def drop(self) -> float:
        """Test accuracy lost against the float export, in percentage points (negative: gained)."""
        return 100.0 * (self.float_test_accuracy - self.test_accuracy)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"test accuracy {self.test_accuracy:.4f} (float {self.float_test_accuracy:.4f}, "
                f"{0.0 - self.drop:+.2f} points), {self.size_bytes / 1024:,.0f} KiB (float "
                f"{self.float_size_bytes / 1024:,.0f} KiB, {self.float_size_bytes / self.size_bytes:.1f}x smaller)")


def check_budget(quantization: Quantization, allow_drop: bool) -> str | None:
    """None when the int8 export is within its budget; else the refusal (an error), or with `allow_drop` the
    warning to print."""
    if round(quantization.drop, 9) <= quantization.max_accuracy_drop:  # 0.992 - 0.991 is 0.1000...09 points
        return None
    words = (f"the int8 export loses {quantization.drop:.2f} points of test accuracy "
             f"({quantization.float_test_accuracy:.4f} -> {quantization.test_accuracy:.4f}), more than the "
             f"{quantization.max_accuracy_drop:g} allowed")
    if allow_drop:
        return f"warning: {words}; written anyway (--allow-accuracy-drop)"
    raise PipelineError(f"{words}; nothing was written. Allow more with --max-accuracy-drop POINTS, write it anyway "
                        f"with --allow-accuracy-drop, or keep the float export")


def default_path(float_default: Path, fmt: str) -> Path:
    """export/model.int8.tflite beside export/model.tflite (and .onnx)."""
    return float_default.with_name(float_default.name.removesuffix(float_default.suffix) + SUFFIX[fmt])


def run_images(config, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration pixels, test pixels, test labels): a seeded sample of the run's training split (never its
    validation or test images) and its whole test split, as raw float32 pixels 0-255."""
    from mnist_pipeline import runtime
    from mnist_pipeline.data.prepare import stratified_split
    from mnist_pipeline.data.sources import load_raw

    raw = load_raw(config.data.dataset, runtime.data_dir(data_dir if data_dir is not None else config.data.data_dir))
    train_idx, _ = stratified_split(raw.y_train, config.data.validation_split, config.training.seed)
    rng = np.random.default_rng(config.training.seed)
    sample = rng.choice(train_idx, size=min(CALIBRATION_IMAGES, len(train_idx)), replace=False)
    return (raw.x_train[np.sort(sample)].astype(np.float32), raw.x_test.astype(np.float32),
            raw.y_test.astype(np.int64))


def quantized_export(fmt: str, path: Path, convert, images, int8: Int8, say) -> Quantization:
    """The int8 file at `path` (metadata not yet added), scored against a float export made beside it (then
    removed), refused past the budget unless allowed. `convert(path, **converter_options)` writes the export's
    float model as `mnist export` does; `images` are `run_images`'."""
    calibration, test_images, test_labels = images
    float_path = path.with_name(path.name + ".float" + path.suffix)
    try:
        convert(float_path)
        if fmt == "tflite":
            import tensorflow as tf

            convert(path, optimizations=[tf.lite.Optimize.DEFAULT],
                    representative_dataset=lambda: ([image[None]] for image in calibration))
        else:
            _quantize_onnx(float_path, path, calibration)
        scores = measure(fmt, path, float_path, (test_images, test_labels), len(calibration), int8.max_drop)
    finally:
        float_path.unlink(missing_ok=True)
    warning = check_budget(scores, int8.allow_drop)  # raises past the budget unless allowed
    say(f"{fmt} int8: {scores.summary()}")
    if warning:
        say(warning)
    return scores


def _quantize_onnx(float_path: Path, path: Path, calibration: np.ndarray) -> None:
    """onnxruntime's recipe: its pre-processing (shape inference, graph optimization), then static quantization."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Sample(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 50)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = path.with_name(path.name + ".prepared.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)  # ONNX's own inference suffices
        quantize_static(prepared, path, Sample(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8)
    finally:
        prepared.unlink(missing_ok=True)


def accuracy(fmt: str, path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy of an exported file in its own runtime (LiteRT's interpreter, onnxruntime)."""
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        run = lambda batch: runner(**{INPUT_NAME: batch})[OUTPUT_NAME]  # noqa: E731
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]  # noqa: E731
    right = 0
    for start in range(0, len(images), SCORE_BATCH):
        batch = images[start:start + SCORE_BATCH]
        right += int(np.sum(np.argmax(run(batch), axis=1) == labels[start:start + SCORE_BATCH]))
    return right / len(images)


def check_options(fmt: str, max_drop: float) -> None:
    if fmt not in SCHEMES:
        raise ConfigError(f"--quantize int8 is for --format tflite or onnx, not {fmt}; drop --quantize for a "
                          f"{fmt} export")
    if not 0 <= max_drop <= 100:
        raise ConfigError(f"--max-accuracy-drop {max_drop:g}: give percentage points from 0 to 100")


def measure(fmt: str, int8_path: Path, float_path: Path, test: tuple[np.ndarray, np.ndarray],
            calibration_images: int, max_drop: float) -> Quantization:
    images, labels = test
    if not len(images):
        raise PipelineError("the run's test split is empty: there is nothing to score the int8 export on")
    return Quantization(
        scheme=SCHEMES[fmt], calibration_images=calibration_images, calibration_split="train",
        test_images=len(images), test_accuracy=accuracy(fmt, int8_path, images, labels),
        float_test_accuracy=accuracy(fmt, float_path, images, labels), size_bytes=os.path.getsize(int8_path),
        float_size_bytes=os.path.getsize(float_path), max_accuracy_drop=max_drop)

