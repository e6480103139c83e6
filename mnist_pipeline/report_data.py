"""report-data.npz: the numbers and images a run's report draws, so `mnist report` needs neither TensorFlow
nor the data. Written once, after the test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mnist_pipeline.data.prepare import Splits
from mnist_pipeline.reports import run_folder
from mnist_pipeline.reports.metrics import most_confident_mistakes
from mnist_pipeline.shapes import IMAGE_SIZE

SAMPLE_COUNT = 16  # the 4x4 samples grid
MISTAKE_COUNT = 25  # the 5x5 grid of most confident mistakes
SALIENCY_COUNT = 10  # the most confident of them get saliency maps: the figure's row of ten


def write_report_data(run_dir: Path, model, splits: Splits, probabilities: np.ndarray, augmentation,
                      seed: int) -> None:
    """Save the numbers and images the report draws: test answers, samples as the model was fed them, the
    most confident mistakes and the first layer's kernel."""
    def image_scale(x):  # (N, 28, 28, 1) normalized -> (N, 28, 28) in [0, 1]
        return np.clip(splits.normalization.invert(np.asarray(x)), 0.0, 1.0)[..., 0]

    # The samples are drawn as augmented (so normalized first, then inverted); the mistakes as stored.
    chosen = np.random.default_rng(seed).choice(len(splits.y_train), SAMPLE_COUNT, replace=False)
    samples = splits.inputs(splits.x_train[chosen])
    if augmentation is not None:
        samples = augmentation(samples, seed=np.array([seed, 0], np.int64))  # what the model was fed
    mistakes = most_confident_mistakes(splits.y_test, probabilities, MISTAKE_COUNT)
    explained = mistakes[:SALIENCY_COUNT]
    saliency = mistake_saliency(_float32_model(model, run_dir), splits.normalization, splits.x_test[explained],
                                probabilities.argmax(axis=1)[explained], splits.y_test[explained])
    first_kernel = next(layer.kernel for layer in model.stack if hasattr(layer, "kernel"))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, test_labels=splits.y_test, test_probabilities=probabilities.astype(np.float32),
        mistake_indices=mistakes, mistake_images=splits.x_test[mistakes] / np.float32(255),
        sample_images=image_scale(samples), sample_labels=splits.y_train[chosen],
        samples_augmented=augmentation is not None, first_layer_kernel=np.asarray(first_kernel),
        mistake_saliency=saliency.maps, saliency_difference=saliency.difference, saliency_error=saliency.error,
        saliency_steps=np.int64(saliency.steps),
    )
    run_folder.write_bytes(run_dir / run_folder.REPORT_DATA, buffer.getvalue())


def mistake_saliency(model, normalization, images: np.ndarray, predicted: np.ndarray, labels: np.ndarray):
    """Integrated gradients of each mistake (raw uint8 images) toward its predicted class against its true
    class, from a blank image, with the inputs normalized as the model takes them."""
    from mnist_pipeline.saliency import integrated_gradients

    blank = normalization.apply(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))[0]
    return integrated_gradients(model, normalization.apply(images), blank, predicted, labels)


def _float32_model(model, run_dir: Path):
    """The model computing in float32: itself, or its saved copy (model.keras) reloaded under float32 when it
    trained in bfloat16 or float16: with 8-bit-mantissa gradients, integrated gradients' attributions stay
    far from adding up to the logit difference as the steps grow (docs/guide/trust.md has the figures)."""
    import keras

    from mnist_pipeline.inference import load_model_file

    if model.compute_dtype == "float32":
        return model
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # layers take it when they are built, at load
    try:
        return load_model_file(run_dir / run_folder.MODEL)
    finally:
        keras.config.set_dtype_policy(policy)
