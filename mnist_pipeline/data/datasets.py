"""tf.data input pipelines over normalized arrays: training reshuffled every epoch from (seed, epoch)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mnist_pipeline.data.augment import Augmentation


class TrainingBatches:
    """Full batches of the training split in a fresh order each epoch, optionally augmented.

    The order of epoch e depends only on (seed, e), so a run resumed at an epoch boundary sees the same
    batches. Batches gather from one in-memory tensor by index, which avoids per-example tf.data overhead.
    The pipeline is built once and reads each epoch's order from a variable: rebuilding it every epoch
    costs ~40 ms (it captures the whole image tensor again), a step's worth of time for small models.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                 augmentation: Augmentation | None = None, jit_compile: bool = False, gpu: bool = False,
                 in_graph: bool | None = None):
        self.x = tf.constant(x)  # (N, 28, 28, 1) float32
        self.y = tf.constant(y)  # (N,) int32
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation  # None: no augmentation
        # Where batches are made (`in_graph` None: decide as follows). On CPU a plain gather is cheapest inside
        # the train step itself (`Trainer.run_steps`), which saves the tf.data iterator and a graph call per
        # step; so is augmentation when the step is compiled by XLA (`jit_compile`): XLA compiles the warp into
        # it. Otherwise augmentation runs in a parallel tf.data map that overlaps with the step. On a GPU
        # (measured on CPU only) the step could copy the whole split from host memory at every call, so GPU
        # runs keep tf.data's prefetching until that is measured.
        if in_graph is None:
            in_graph = not gpu and (augmentation is None or jit_compile)
        self.in_graph = in_graph
        # Full batches only: one static shape means one trace of the train step, and an exact global batch.
        self.steps_per_epoch = len(y) // batch_size
        self.order = tf.Variable(tf.zeros([self.steps_per_epoch, batch_size], tf.int64), trainable=False)
        self.epoch_number = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Augmenting batches in parallel is still deterministic: each batch's warps are keyed by its own number,
        # not drawn from a shared generator. A plain gather stays sequential: on 2 cores, extra map threads
        # only compete with the train step. Prefetch overlaps either with training.
        parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) if augmentation else {}
        batches = tf.data.Dataset.range(self.steps_per_epoch).map(self.batch, **parallel)
        self.dataset = batches.prefetch(tf.data.AUTOTUNE)

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """Ready epoch `epoch` and return its batches; iterate each returned dataset fully (or not at all, when
        the steps gather their own batches) before asking for the next epoch."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
        self.order.assign(order[: self.steps_per_epoch * self.batch_size].reshape(self.steps_per_epoch, -1))
        self.epoch_number.assign(epoch)
        return self.dataset

    def batch(self, step):
        """Batch number `step` (an int64 tensor) of the readied epoch, as graph ops."""
        index = self.order[step]
        images, labels = tf.gather(self.x, index), tf.gather(self.y, index)
        if self.augmentation is not None:
            batch_number = self.epoch_number * self.steps_per_epoch + step
            images = self.augmentation(images, tf.stack([tf.constant(self.seed, tf.int64), batch_number]),
                                       compilable=self.in_graph)
        return images, labels


def evaluation_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Every example once, in order; the last batch may be partial."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
