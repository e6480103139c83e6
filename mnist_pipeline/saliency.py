"""Why a model erred: integrated gradients (Sundararajan et al. 2017) of the wrong class's logit minus the true
class's, against a blank image, for the report's most confident mistakes.

Completeness is the method's check on itself: the attributions add up to F(image) - F(blank). The path integral
is a trapezoid sum whose steps double (from MIN_STEPS, reusing the gradients already taken) until every image
meets it within TOLERANCE, or MAX_STEPS is reached; the error left is returned with the maps, so the report can
say how exact they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_STEPS, MAX_STEPS = 32, 1024
# Of |F(image) - F(blank)|, and at least this many logits: the paper's own check ("within 5%"). ReLU and
# max-pooling kinks along the path make the sum converge slowly: 1% can take thousands of steps
# (docs/guide/trust.md has the figures).
TOLERANCE = 0.05
CHUNK = 512  # images per forward-and-backward pass: bounds memory whatever the step count


@dataclass(frozen=True)
class Attributions:
    maps: np.ndarray  # (N, 28, 28) float32: how much each pixel moved F = logit[pushed] - logit[against]
    difference: np.ndarray  # (N,) F(image) - F(blank)
    error: np.ndarray  # (N,) |sum(maps) - difference|
    steps: int


def integrated_gradients(model, inputs: np.ndarray, baseline: np.ndarray, pushed: np.ndarray,
                         against: np.ndarray) -> Attributions:
    """Attributions of logit[pushed] - logit[against] for (N, 28, 28, 1) model inputs (normalized as the model
    takes them) against `baseline` (one (28, 28, 1) input, e.g. a blank image normalized the same way)."""
    import tensorflow as tf

    inputs = np.asarray(inputs, np.float32)
    baseline = np.asarray(baseline, np.float32)[None]
    if not len(inputs):  # a model that made no mistake has nothing to explain
        empty = np.zeros((0,), np.float32)
        return Attributions(np.zeros(inputs.shape[:3], np.float32), empty, empty, 0)
    pairs = np.stack([pushed, against], axis=1).astype(np.int32)

    def target(x, rows):  # F for each image in x, rows: (M, 2) class pairs
        logits = tf.cast(model(x, training=False), tf.float32)
        return tf.gather(logits, rows[:, 0], batch_dims=1) - tf.gather(logits, rows[:, 1], batch_dims=1)

    # One trace for every chunk size: the doublings feed batches of many sizes.
    @tf.function(input_signature=[tf.TensorSpec((None, *inputs.shape[1:]), tf.float32),
                                  tf.TensorSpec((None, 2), tf.int32)])
    def gradients(x, rows):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = target(x, rows)
        return tape.gradient(value, x)

    difference = (target(inputs, pairs) - target(np.repeat(baseline, len(inputs), 0), pairs)).numpy()
    allowed = np.maximum(TOLERANCE * np.abs(difference), TOLERANCE)
    # Trapezoid sums over k / steps, k = 0..steps. Doubling the steps adds only the odd points k / (2 steps),
    # so the gradients already taken are kept as two sums: the end points' and the inner points'.
    ends = (_gradients_at(gradients, inputs, baseline, pairs, np.array([0.0, 1.0])).sum(axis=1)) / 2
    inner = _gradients_at(gradients, inputs, baseline, pairs, np.arange(1, MIN_STEPS) / MIN_STEPS).sum(axis=1)
    steps = MIN_STEPS
    while True:
        maps = (inputs - baseline) * (ends + inner) / steps
        error = np.abs(maps.reshape(len(inputs), -1).sum(axis=1) - difference)
        if np.all(error <= allowed) or steps >= MAX_STEPS:
            return Attributions(maps[..., 0], difference, error, steps)
        inner = inner + _gradients_at(gradients, inputs, baseline, pairs,
                                      np.arange(1, 2 * steps, 2) / (2 * steps)).sum(axis=1)
        steps *= 2


def _gradients_at(gradients, inputs: np.ndarray, baseline: np.ndarray, pairs: np.ndarray,
                  alphas: np.ndarray) -> np.ndarray:
    """(N, len(alphas), 28, 28, 1): the gradients at baseline + a (x - baseline) for each a, CHUNK at a time."""
    alphas = alphas.astype(np.float32)
    if not len(alphas):
        return np.zeros((len(inputs), 0, *inputs.shape[1:]), np.float32)
    path = baseline[None] + alphas[None, :, None, None, None] * (inputs - baseline)[:, None]
    flat = path.reshape(-1, *inputs.shape[1:])
    rows = np.repeat(pairs, len(alphas), axis=0)
    return np.concatenate([gradients(flat[i:i + CHUNK], rows[i:i + CHUNK]).numpy()
                           for i in range(0, len(flat), CHUNK)]).reshape(path.shape)
