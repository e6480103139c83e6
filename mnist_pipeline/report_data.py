"""report-data.npz: the numbers and images a run's report draws, so `mnist report` needs neither TensorFlow
nor the data. Written once, after the test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mnist_pipeline.data.prepare import Splits
from mnist_pipeline.reports import run_folder
from mnist_pipeline.reports.metrics import most_confident_mistakes

SAMPLE_COUNT = 16  # the 4x4 samples grid
MISTAKE_COUNT = 25  # the 5x5 grid of most confident mistakes


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
    first_kernel = next(layer.kernel for layer in model.stack if hasattr(layer, "kernel"))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, test_labels=splits.y_test, test_probabilities=probabilities.astype(np.float32),
        mistake_indices=mistakes, mistake_images=splits.x_test[mistakes] / np.float32(255),
        sample_images=image_scale(samples), sample_labels=splits.y_train[chosen],
        samples_augmented=augmentation is not None, first_layer_kernel=np.asarray(first_kernel),
    )
    run_folder.write_bytes(run_dir / run_folder.REPORT_DATA, buffer.getvalue())
