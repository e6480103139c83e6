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

    def __call__(self, images: tf.Tensor, seed: tf.Tensor, compilable: bool = False) -> tf.Tensor:
        """`images` (batch, h, w, c) float32 -> the same shape, augmented; `seed` a shape-[2] int tensor.

        `compilable`: resample with gathers, which XLA compiles into the train step. Otherwise TensorFlow's
        ImageProjectiveTransformV3 kernel, which XLA cannot compile but which is the faster of the two outside
        XLA (docs/benchmarks.md, "Figures behind design choices"). Given the same transforms both give the
        same pixels (a test compares them); see `transforms` for the random numbers under XLA.
        """
        if self.warps:
            images = self._warp(images, seed, compilable)
        if self.erasing:
            # Its own stream, so that turning erasing on leaves the warps of a seed as they were.
            images = self._erase(images, tf.random.experimental.stateless_fold_in(seed, 1))
        return images

    def _warp(self, images: tf.Tensor, seed: tf.Tensor, compilable: bool) -> tf.Tensor:
        transforms = self.transforms(images, seed)
        if compilable:
            return resample_bilinear(images, transforms, self.fill_value)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=self.fill_value,
            interpolation="BILINEAR", fill_mode="CONSTANT")

    def transforms(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """(batch, 8) random affine maps, one per image, in ImageProjectiveTransformV3's layout.

        Inside an XLA cluster the stateless generator draws other numbers than outside it (its counters are
        laid out differently), so a step compiled with XLA sees other (equally random, equally reproducible)
        warps than a tf.data map for the same seed.
        """
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
        return tf.stack([m00, m01, cx - m00 * cx - m01 * cy - shift_x,
                         m10, m11, cy - m10 * cx - m11 * cy - shift_y,
                         tf.zeros_like(cos), tf.zeros_like(cos)], axis=1)

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


def resample_bilinear(images: tf.Tensor, transforms: tf.Tensor, fill_value: float) -> tf.Tensor:
    """What ImageProjectiveTransformV3 computes for affine `transforms` (rows a0 a1 a2 b0 b1 b2 0 0), bilinear
    interpolation and constant fill, in gathers and arithmetic that XLA compiles.

    Output pixel (x, y) reads input point (a0 x + a1 y + a2, b0 x + b1 y + b2); each of its four neighbours
    outside the image counts as `fill_value`. `images` need a static height, width and channel count.
    """
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    t = transforms[:, :, None, None]
    x = t[:, 0] * cols + t[:, 1] * rows + t[:, 2]  # (batch, h, w)
    y = t[:, 3] * cols + t[:, 4] * rows + t[:, 5]
    x0, y0 = tf.floor(x), tf.floor(y)
    pixels = tf.reshape(images, [batch, height * width, channels])

    def read(row, col):  # (batch, h * w, channels): the pixel at (row, col), or the fill outside the image
        inside = (row >= 0) & (row <= height - 1) & (col >= 0) & (col <= width - 1)
        index = tf.clip_by_value(row, 0, height - 1) * width + tf.clip_by_value(col, 0, width - 1)
        values = tf.gather(pixels, tf.reshape(tf.cast(index, tf.int32), [batch, -1]), batch_dims=1)
        return tf.where(tf.reshape(inside, [batch, -1, 1]), values, tf.cast(fill_value, images.dtype))

    wx, wy = tf.reshape(x - x0, [batch, -1, 1]), tf.reshape(y - y0, [batch, -1, 1])
    top = (1 - wx) * read(y0, x0) + wx * read(y0, x0 + 1)
    bottom = (1 - wx) * read(y0 + 1, x0) + wx * read(y0 + 1, x0 + 1)
    return tf.reshape((1 - wy) * top + wy * bottom, [batch, height, width, channels])
