"""Precise batch norm: batch norm's population statistics recomputed for the weights about to be evaluated.

Keras keeps an exponential moving average of each training batch's mean and variance (momentum 0.99: a
memory of ~100 steps, starting from mean 0 and variance 1). On a short run those averages trail the weights:
after the first epoch of a 15-step-per-epoch run they still hold ~86% of their starting values, and
validation measures a model that never existed. Here they are replaced, before each validation, by the mean
over a fixed sample of training batches of each layer's batch statistics under the current weights ("precise
BN", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", section 3). The statistics are a function of the
weights and the sample alone, so a resumed run recomputes exactly what the uninterrupted one did.

Works on models whose `call` runs `model.stack` in order (every registry model); owns no data and no files.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import tensorflow as tf


class PreciseBatchNorm:
    """`recompute(batches)`: set every batch norm layer's moving mean and variance from `batches` of
    training images ((batch, 28, 28, 1) model inputs, the training batch size, no augmentation)."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.layers = [layer for layer in model.stack if isinstance(layer, keras.layers.BatchNormalization)]
        self.moments = tf.function(self._moments)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def _moments(self, images):
        """Every batch norm layer's (mean, variance) on this batch, as training computes them: each batch norm
        normalizes with the batch's own statistics; dropout and every other layer run as in inference."""
        x, moments = images, []
        for layer in self.model.stack:
            if not isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=False)
                continue
            wide = tf.cast(x, tf.float32)  # statistics in float32 under a bfloat16 policy too, as Keras does
            mean, variance = tf.nn.moments(wide, axes=list(range(len(x.shape) - 1)))  # biased, as Keras's
            moments.append((mean, variance))
            scale = layer.gamma if layer.scale else None
            offset = layer.beta if layer.center else None
            x = tf.cast(tf.nn.batch_normalization(wide, mean, variance, offset, scale, layer.epsilon), x.dtype)
            # the activation that follows is its own layer in the stack
        return moments

    def recompute(self, batches: Iterable) -> int:
        """Replace the moving statistics by their means over `batches`; returns the number of batches used."""
        if not self.layers:
            return 0
        totals, count = None, 0
        for images in batches:
            moments = self.moments(images)
            totals = moments if totals is None else [(m0 + m, v0 + v) for (m0, v0), (m, v) in
                                                     zip(totals, moments, strict=True)]
            count += 1
        if not count:
            return 0
        for layer, (mean, variance) in zip(self.layers, totals, strict=True):
            layer.moving_mean.assign(mean / count)
            layer.moving_variance.assign(variance / count)
        return count
