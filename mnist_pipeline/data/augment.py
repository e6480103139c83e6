"""Training-time augmentation: one random affine warp per image (rotation, shift, zoom, mirror), batched.

Every random number comes from a stateless generator keyed by (seed, batch number), so

- a batch's augmentation depends only on the run's seed and where the batch falls in training: the tf.data
  map can run in parallel and still be deterministic, and a resumed run needs no generator state;
- rotation, shift, zoom and flip are composed into one transform and resampled once (Keras's Random* layers
  resample the batch once per layer and draw from stateful generators, which force a sequential map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    """Ranges follow Keras's layers: rotation as a fraction of a full turn, translation and zoom as fractions
    of the image size. Points from outside the image get `fill_value`: the normalized value of a blank pixel,
    so that warping never brings in a grey border."""

    rotation: float = 0.0
    translation: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    fill_value: float = 0.0

    @classmethod
    def from_config(cls, section, fill_value: float = 0.0) -> Augmentation | None:
        """The warps a `config.AugmentationConfig` asks for, or None when they are all off."""
        augmentation = cls(section.rotation, section.translation, section.zoom, section.horizontal_flip,
                           fill_value)
        return augmentation if augmentation.enabled else None

    @property
    def enabled(self) -> bool:
        return bool(self.rotation or self.translation or self.zoom or self.horizontal_flip)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`images` (batch, h, w, c) float32 -> the same shape, warped; `seed` a shape-[2] int tensor."""
        if not self.enabled:
            return images
        shape = tf.shape(images)
        batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        # Columns: angle, zoom, shift x, shift y, flip - each uniform in [-1, 1), scaled below.
        u = tf.random.stateless_uniform([batch, 5], seed=seed, minval=-1.0, maxval=1.0)
        angle = u[:, 0] * self.rotation * 2 * math.pi
        scale = 1.0 + u[:, 1] * self.zoom  # >1 samples a larger area: zooms out
        shift_x, shift_y = u[:, 2] * self.translation * width, u[:, 3] * self.translation * height
        flip = tf.where(u[:, 4] < 0, -1.0, 1.0) if self.horizontal_flip else tf.ones_like(angle)
        # Output pixel p maps to input pixel M (p - c) + c - shift, with M = scale * rotate(angle) * mirror
        # and c the image centre: the inverse map ImageProjectiveTransformV3 expects.
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        m00, m01, m10, m11 = cos * flip, -sin, sin * flip, cos
        cx, cy = (width - 1) / 2, (height - 1) / 2
        transforms = tf.stack([m00, m01, cx - m00 * cx - m01 * cy - shift_x,
                               m10, m11, cy - m10 * cx - m11 * cy - shift_y,
                               tf.zeros_like(cos), tf.zeros_like(cos)], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=self.fill_value,
            interpolation="BILINEAR", fill_mode="CONSTANT")
