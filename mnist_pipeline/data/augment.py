"""Training-time augmentation: one random affine warp per image (rotation, shift, zoom, mirror), then
optionally random erasing of a rectangle; batched.

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
    erasing: float = 0.0  # probability that an image gets one rectangle blanked out (random erasing)
    fill_value: float = 0.0

    @classmethod
    def from_config(cls, section, fill_value: float = 0.0) -> Augmentation | None:
        """The warps a `config.AugmentationConfig` asks for, or None when they are all off."""
        augmentation = cls(section.rotation, section.translation, section.zoom, section.horizontal_flip,
                           section.erasing, fill_value)
        return augmentation if augmentation.enabled else None

    @property
    def warps(self) -> bool:
        return bool(self.rotation or self.translation or self.zoom or self.horizontal_flip)

    @property
    def enabled(self) -> bool:
        return self.warps or bool(self.erasing)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`images` (batch, h, w, c) float32 -> the same shape, augmented; `seed` a shape-[2] int tensor."""
        if self.warps:
            images = self._warp(images, seed)
        if self.erasing:
            # Its own stream, so that turning erasing on leaves the warps of a seed as they were.
            images = self._erase(images, tf.random.experimental.stateless_fold_in(seed, 1))
        return images

    def _warp(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
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

    def _erase(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Random erasing (Zhong et al., 2017, with its defaults): with probability `erasing`, one rectangle of
        2-40% of the image, aspect ratio 0.3-3.3, set to `fill_value`. A network that cannot rely on any one
        part of a garment (a collar, a sole) has to look at the rest: on clothes this regularizes better
        than more dropout. One mask per batch from broadcast comparisons: no per-image ops."""
        shape = tf.shape(images)
        batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        # Columns: erase?, area, log aspect ratio, left, top - each uniform in [0, 1).
        u = tf.random.stateless_uniform([batch, 5], seed=seed)
        area = (0.02 + u[:, 1] * 0.38) * height * width
        aspect = tf.exp(math.log(0.3) + u[:, 2] * 2 * math.log(1 / 0.3))
        box_h = tf.minimum(tf.round(tf.sqrt(area * aspect)), height)
        box_w = tf.minimum(tf.round(tf.sqrt(area / aspect)), width)
        top, left = tf.floor(u[:, 4] * (height - box_h + 1)), tf.floor(u[:, 3] * (width - box_w + 1))
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
                  & (u[:, 0] < self.erasing)[:, None, None])
        return tf.where(inside[..., None], tf.cast(self.fill_value, images.dtype), images)
