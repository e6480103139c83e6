"""Losses, per-phase metrics and the compiled evaluation step, shared by training, `mnist evaluate` and export.

Works on any `keras.Model` that maps (batch, 28, 28, 1) images to (batch, NUM_CLASSES) logits. No file I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline.shapes import NUM_CLASSES


class PhaseMetrics:
    """Epoch means of loss and accuracy for one phase (train, val or test).

    Keras metrics keep sums and counts in variables that a strategy adds up over replicas when read (keras
    >= 3.10, keras-team/keras PR 21072), so `result()` is the mean over every example of every replica.
    """

    def __init__(self, phase: str):
        self.loss = keras.metrics.Mean(name=f"{phase}_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name=f"{phase}_accuracy")

    def update(self, per_example_loss, labels, logits, weights=None) -> None:
        self.loss.update_state(per_example_loss, sample_weight=weights)
        self.accuracy.update_state(labels, logits, sample_weight=weights)

    def reset(self) -> None:
        self.loss.reset_state()
        self.accuracy.reset_state()

    def result(self) -> tuple[float, float]:
        return float(self.loss.result()), float(self.accuracy.result())


def per_example_loss_fn() -> keras.losses.Loss:
    # Per-example losses: averaging is ours to do (over the global batch when training, see tf.distribute).
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def smoothed_cross_entropy(labels, logits, smoothing: float):
    """Per-example cross-entropy against (1 - smoothing) on the label plus smoothing spread over all classes.

    Keras 3's sparse cross-entropy has no label smoothing, and one-hot labels would cost a (batch, 10) copy.
    """
    log_probabilities = tf.nn.log_softmax(logits)
    label_term = -tf.gather(log_probabilities, labels, batch_dims=1)
    uniform_term = -tf.reduce_mean(log_probabilities, axis=-1)
    return (1.0 - smoothing) * label_term + smoothing * uniform_term


def class_probabilities(model: keras.Model, images, test_time_flip: bool = False):
    """(batch, 10) softmax outputs; with `test_time_flip`, the mean over each image and its mirror image."""
    probabilities = tf.nn.softmax(model(images, training=False))
    if test_time_flip:
        probabilities = (probabilities + tf.nn.softmax(model(tf.reverse(images, axis=[2]), training=False))) / 2
    return probabilities


class Evaluation:
    """Loss, accuracy and (optionally) class probabilities of a model over `data.datasets.evaluation_batches`,
    in one compiled step, on one device or on every replica of `strategy`.

    The trainer validates and tests with it, and `mnist evaluate` re-runs it on a saved model, so the
    numbers it prints are computed exactly as the ones in metrics.json.
    """

    def __init__(self, model: keras.Model, phase: str, test_time_flip: bool = False,
                 strategy: tf.distribute.Strategy | None = None):
        self.model = model
        self.test_time_flip = test_time_flip
        self.strategy = strategy or tf.distribute.get_strategy()
        self.loss_fn = per_example_loss_fn()
        self.metrics = PhaseMetrics(phase)
        self.step = tf.function(self._step)

    def _step(self, images, labels, weights):
        """(batch, 10) probabilities and the weights of every replica's slice, gathered in replica order."""
        probabilities = self.strategy.run(self._replica_step, args=(images, labels, weights))
        return self.strategy.gather(probabilities, axis=0), self.strategy.gather(weights, axis=0)

    def _replica_step(self, images, labels, weights):
        if self.test_time_flip:  # no single set of logits: the loss comes from the averaged probabilities
            probabilities = class_probabilities(self.model, images, test_time_flip=True)
            chosen = tf.gather(probabilities, labels, batch_dims=1)
            self.metrics.update(-tf.math.log(tf.maximum(chosen, 1e-7)), labels, probabilities, weights)  # as Keras
            return probabilities
        logits = self.model(images, training=False)
        self.metrics.update(self.loss_fn(labels, logits), labels, logits, weights)  # padding weighs 0
        return tf.nn.softmax(logits)

    def __call__(self, data: Iterable, probabilities: bool = False):
        """(loss, accuracy), or (loss, accuracy, (N, 10) probabilities) with `probabilities`."""
        self.metrics.reset()
        collected = [self.step(*batch) for batch in data]
        loss, accuracy = self.metrics.result()
        if not probabilities:
            return loss, accuracy
        if not collected:
            return loss, accuracy, np.zeros((0, NUM_CLASSES), np.float32)
        rows = np.concatenate([p.numpy() for p, _ in collected])
        return loss, accuracy, rows[np.concatenate([w.numpy() for _, w in collected]) > 0]  # padding dropped
