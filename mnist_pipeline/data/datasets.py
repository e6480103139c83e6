"""Batches for training and evaluation, and `training_batches`: the one rule for where training batches are made.

A training source hands `Trainer.fit` full batches of the training split, in an order that depends only on
(seed, epoch), so a run resumed at an epoch boundary sees the same batches. Three sources share that order
and one gather, and differ only in where the gather runs:

- `InStepBatches`: inside the compiled group of train steps (no tf.data iterator, no call between graphs
  per step; under XLA the whole group, batches included, is one cluster);
- `PipelinedBatches`: in a tf.data map that overlaps with the steps (augmentation TensorFlow's warp kernel);
- `ReplicaBatches`: the same tf.data map per worker of a tf.distribute strategy, one slice per replica.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from mnist_pipeline.data.augment import Augmentation
from mnist_pipeline.data.prepare import ALIGNMENT, Normalization


class BatchSource(Protocol):
    """What `Trainer.fit` trains on. `start_epoch(e)` readies epoch e (0-based) and returns a feed;
    `next_batch(feed, step)` is called inside the compiled group and gives step `step`'s batch."""

    steps_per_epoch: int
    compilable: bool  # next_batch is plain graph ops: XLA can compile it into the group of steps
    placement: str  # where batches are made, for metrics.json

    def start_epoch(self, epoch: int) -> Any: ...

    def next_batch(self, feed: Any, step: tf.Tensor) -> tuple[Any, Any]: ...


def model_inputs(images, normalization: Normalization | None):
    """Stored images -> model inputs, inside the graph: (N, 28, 28) uint8 -> (N, 28, 28, 1) float32 with the
    run's normalization, by the same float32 operations as `Normalization.apply` (so the same values). With
    no normalization the images are model inputs already."""
    if normalization is None:
        return images
    return normalization.standardize(tf.cast(images, tf.float32)[..., None] / np.float32(255.0))


def training_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     augmentation: Augmentation | None = None, *, jit_compile: bool = False, gpu: bool = False,
                     strategy: tf.distribute.Strategy | None = None,
                     normalization: Normalization | None = None) -> BatchSource:
    """The source `mnist train` uses, chosen where batches are cheapest to make:

    - under a tf.distribute strategy: per replica, from tf.data (a strategy feeds replicas from datasets);
    - on a GPU: from tf.data, which prefetches to the device. An in-step gather would make the step read
      the whole split from host memory at every call (not measured: no GPU ran TensorFlow here);
    - on CPU, plain batches in the step: it saves the iterator and a graph call per step; so does augmentation
      when XLA compiles the step (the warp compiles into it), which measured faster side by side on the MLP
      (docs/benchmarks.md, "Figures behind design choices");
    - otherwise, augmentation in a parallel tf.data map that overlaps with the step.

    With `normalization`, `x` is stored images ((N, 28, 28) uint8) that each batch normalizes as it is made
    (see `model_inputs`); without, `x` is model inputs already.
    """
    if strategy is not None:
        return ReplicaBatches(x, y, batch_size, seed, augmentation, strategy, normalization=normalization)
    if not gpu and (augmentation is None or jit_compile):
        return InStepBatches(x, y, batch_size, seed, augmentation, normalization=normalization)
    return PipelinedBatches(x, y, batch_size, seed, augmentation, normalization=normalization)


def shared_tensor(array: np.ndarray) -> tf.Tensor:
    """A CPU tensor over `array`'s own memory (through DLPack) when TensorFlow can read it in place: C-contiguous,
    writeable (DLPack lends no read-only buffer) and 64-byte aligned (`prepare.aligned_rows`; TensorFlow's
    kernels abort the process on a misaligned buffer). Otherwise a copy (tf.constant).

    Holding the training images once matters: tf.constant's copy of Fashion-MNIST's 42 MB raised the peak by
    88 MB (the copy, and as much again that the allocator kept from the conversion). The array must not
    change while the tensor lives: the splits never do."""
    if array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)


class _ShuffledSplit:
    """The training split in memory and each epoch's order; batch `step` (or a slice of it) as graph ops.

    Batches gather from one in-memory tensor by index, which avoids per-example tf.data overhead. The
    epoch's order lives in a variable, so pipelines are built once: rebuilding one every epoch captures the
    whole image tensor again, which costs about a step's worth of time for small models.
    """

    compilable = False

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                 augmentation: Augmentation | None = None, normalization: Normalization | None = None):
        self.x = shared_tensor(x)  # (N, 28, 28) uint8 with a normalization; else model inputs
        self.y = shared_tensor(y)  # (N,) int32
        self.normalization = normalization
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation  # None: no augmentation
        # Full batches only: one static shape means one trace of the group, and an exact global batch.
        self.steps_per_epoch = len(y) // batch_size
        self.order = tf.Variable(tf.zeros([self.steps_per_epoch, batch_size], tf.int64), trainable=False)
        self.epoch_number = tf.Variable(0, dtype=tf.int64, trainable=False)

    def ready(self, epoch: int) -> None:
        """Make epoch `epoch` (0-based) the one `batch` reads."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
        self.order.assign(order[: self.steps_per_epoch * self.batch_size].reshape(self.steps_per_epoch, -1))
        self.epoch_number.assign(epoch)

    def batch(self, step, part=0, parts: int = 1):
        """Slice `part` of `parts` equal slices of batch `step` (int64 tensors) of the readied epoch."""
        index = self.order[step]
        if parts > 1:
            size = self.batch_size // parts
            index = index[part * size:(part + 1) * size]
        images, labels = model_inputs(tf.gather(self.x, index), self.normalization), tf.gather(self.y, index)
        if self.augmentation is not None:
            # Keyed by the slice's own number, not drawn from a shared generator: slices can be made in
            # parallel and in any order, and a resumed run needs no generator state.
            number = (self.epoch_number * self.steps_per_epoch + step) * parts + part
            images = self.augmentation(images, tf.stack([tf.constant(self.seed, tf.int64), number]),
                                       compilable=self.compilable)
        return images, labels

    def _map(self, dataset: tf.data.Dataset, function) -> tf.data.Dataset:
        # Augmenting in parallel is still deterministic (see `batch`). A plain gather stays sequential: on 2
        # cores, extra map threads only compete with the train step. Prefetch overlaps either with training.
        parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) if self.augmentation else {}
        return dataset.map(function, **parallel).prefetch(tf.data.AUTOTUNE)


class InStepBatches(_ShuffledSplit):
    """Each step gathers (and augments, with XLA-compilable resampling) its own batch."""

    compilable = True
    placement = "in the step"

    def start_epoch(self, epoch: int) -> None:
        self.ready(epoch)

    def next_batch(self, feed: None, step):
        return self.batch(step)


class _DatasetBatches(_ShuffledSplit):
    """Batches from `self.dataset`, made ahead of the steps; `start_epoch` returns the epoch's iterator, to be
    read to its end (an abandoned iterator keeps prefetching and takes CPU from the steps)."""

    dataset: tf.data.Dataset | tf.distribute.DistributedDataset

    def start_epoch(self, epoch: int):
        self.ready(epoch)
        return iter(self.dataset)

    def next_batch(self, feed, step):
        return next(feed)


class PipelinedBatches(_DatasetBatches):
    """Batches made in a tf.data map that overlaps with the steps."""

    placement = "tf.data"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset = self._map(tf.data.Dataset.range(self.steps_per_epoch), self.batch)

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """Epoch `epoch`'s batches as a dataset, to read in Python (tests, `mnist diagnose`)."""
        self.ready(epoch)
        return self.dataset


class ReplicaBatches(_DatasetBatches):
    """Batches for a tf.distribute strategy: replica r of R gets slice r of each global batch (batch_size / R
    examples), so the replicas together train on exactly the batches of a single device. Each worker builds
    its own pipeline (`distribute_datasets_from_function`) and makes only its own replicas' slices."""

    placement = "tf.data, per replica"

    def __init__(self, x, y, batch_size: int, seed: int, augmentation: Augmentation | None,
                 strategy: tf.distribute.Strategy, normalization: Normalization | None = None):
        super().__init__(x, y, batch_size, seed, augmentation, normalization)
        self.dataset = strategy.distribute_datasets_from_function(self._replica_slices)

    def _replica_slices(self, context: tf.distribute.InputContext) -> tf.data.Dataset:
        parts, first, local = _local_replicas(context)
        # Element k goes to local replica k % local (the strategy deals a worker's elements out in turn).
        slices = tf.data.Dataset.range(self.steps_per_epoch * local)
        return self._map(slices, lambda k: self.batch(k // local, first + k % local, parts))


def _local_replicas(context: tf.distribute.InputContext) -> tuple[int, int, int]:
    """(replicas in all, global id of this worker's first replica, replicas on this worker)."""
    parts = context.num_replicas_in_sync
    local = parts // context.num_input_pipelines
    return parts, context.input_pipeline_id * local, local


def evaluation_batches(x: np.ndarray, y: np.ndarray, batch_size: int,
                       strategy: tf.distribute.Strategy | None = None, normalization: Normalization | None = None):
    """Every example once, in order, as (images, labels, weights) batches of exactly `batch_size`: the last
    batch is padded, its padding weighted 0. One static shape means one trace of the evaluation step, and
    under a `strategy` each replica gets an equal slice of every batch (replica r: rows r * size / R onward),
    so gathering the replicas' outputs in replica order restores the examples' order. With `normalization`,
    `x` is stored uint8 images, normalized batch by batch (see `model_inputs`)."""
    def pad(images, labels):
        images = model_inputs(images, normalization)
        missing = batch_size - tf.shape(labels)[0]
        weights = tf.pad(tf.ones_like(labels, tf.float32), [[0, missing]])
        return tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]]), tf.pad(labels, [[0, missing]]), weights

    batches = tf.data.Dataset.from_tensor_slices((shared_tensor(x), shared_tensor(y))).batch(batch_size).map(pad)
    if strategy is None:
        return batches.prefetch(tf.data.AUTOTUNE)

    def replica_slices(context: tf.distribute.InputContext) -> tf.data.Dataset:
        parts, first, local = _local_replicas(context)

        def split(*tensors):  # (batch, ...) -> this worker's (local, batch / parts, ...)
            return tuple(tf.reshape(t, [parts, batch_size // parts, *t.shape[1:]])[first:first + local]
                         for t in tensors)

        return batches.map(split).unbatch().prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(replica_slices)


def statistics_batches(x: np.ndarray, batch_size: int, images: int, seed: int,
                       normalization: Normalization | None = None) -> tf.data.Dataset | None:
    """Full batches of `images` training images drawn once with `seed` (fewer when the split is smaller; at
    least one batch), unaugmented: what `precise_bn` recomputes batch norm's statistics on. None when
    `images` is 0 or the split holds no full batch. Batches of the training batch size, because batch
    statistics depend on it."""
    if not images or len(x) < batch_size:
        return None
    count = max(min(images, len(x)) // batch_size, 1)
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), count * batch_size, replace=False))
    sample = tf.constant(x[chosen])  # at most `images` images: a copy is cheap
    return (tf.data.Dataset.from_tensor_slices(sample).batch(batch_size, drop_remainder=True)
            .map(lambda batch: model_inputs(batch, normalization)).cache())
