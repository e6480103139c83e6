import numpy as np
import pytest
import tensorflow as tf

from mnist_pipeline.data.augment import Augmentation
from mnist_pipeline.data.datasets import PipelinedBatches, evaluation_batches


def arrays(n=100):
    x = np.arange(n * 784, dtype=np.float32).reshape(n, 28, 28, 1) / (n * 784)
    return x, np.arange(n, dtype=np.int32)  # label = row index, to track examples


def labels_of(ds):
    return [batch[1].numpy() for batch in ds]


def test_epochs_are_full_batches_without_repeats_in_a_seeded_order():
    x, y = arrays()
    batches = PipelinedBatches(x, y, batch_size=32, seed=7)
    first = labels_of(batches.epoch(0))
    assert batches.steps_per_epoch == 3
    assert [len(b) for b in first] == [32, 32, 32]
    seen = np.concatenate(first)
    assert len(np.unique(seen)) == 96
    np.testing.assert_array_equal(seen, np.concatenate(labels_of(batches.epoch(0))))  # same (seed, epoch)
    assert not np.array_equal(seen, np.concatenate(labels_of(batches.epoch(1))))  # reshuffled next epoch
    again = PipelinedBatches(x, y, batch_size=32, seed=8)
    assert not np.array_equal(seen, np.concatenate(labels_of(again.epoch(0))))
    images, labels = next(iter(batches.epoch(0)))
    np.testing.assert_array_equal(images.numpy(), x[labels.numpy()])  # images stay with their labels


def test_augmentation_applies_to_training_batches_only_and_repeats_exactly():
    x, y = arrays(64)
    augmentation = Augmentation(rotation=0.05, translation=0.1, zoom=0.1, horizontal_flip=True)

    def first_epochs(seed):
        batches = PipelinedBatches(x, y, 16, seed=seed, augmentation=augmentation)  # a parallel map
        return [np.concatenate([b[0].numpy() for b in batches.epoch(e)]) for e in (0, 1)], batches

    (epoch0, epoch1), batches = first_epochs(seed=0)
    images, labels = next(iter(batches.epoch(0)))
    assert not np.allclose(images.numpy(), x[labels.numpy()])
    again, _ = first_epochs(seed=0)
    np.testing.assert_array_equal(epoch0, again[0])  # keyed by (seed, batch number): no generator state
    np.testing.assert_array_equal(epoch1, again[1])
    other, _ = first_epochs(seed=1)
    assert not np.allclose(epoch0, other[0])
    evaluated = np.concatenate([b[0].numpy() for b in evaluation_batches(x, y, 32)])
    np.testing.assert_array_equal(evaluated[:len(x)], x)


def test_evaluation_keeps_every_example_in_order_in_full_batches_with_the_padding_weighted_zero():
    x, y = arrays(70)
    batches = list(evaluation_batches(x, y, 32))
    assert [len(b[1]) for b in batches] == [32, 32, 32]  # one static shape: one trace
    weights = np.concatenate([b[2].numpy() for b in batches])
    np.testing.assert_array_equal(weights, [1.0] * 70 + [0.0] * 26)
    np.testing.assert_array_equal(np.concatenate(labels_of(batches))[:70], y)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches])[70:], 0)


@pytest.mark.parametrize("method", ["scale", "standardize"])
def test_batches_normalized_in_the_graph_equal_normalized_arrays(method):
    """Stored uint8 images normalized batch by batch give the very values of `Normalization.apply`."""
    from mnist_pipeline.data.datasets import InStepBatches, model_inputs
    from mnist_pipeline.data.prepare import fit_normalization

    images = np.random.default_rng(3).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = np.arange(64, dtype=np.int32) % 10
    norm = fit_normalization(images, method)
    np.testing.assert_array_equal(model_inputs(tf.constant(images), norm).numpy(), norm.apply(images))
    evaluated = np.concatenate([b[0].numpy() for b in evaluation_batches(images, labels, 32, normalization=norm)])
    np.testing.assert_array_equal(evaluated, norm.apply(images))
    stored, prepared = (InStepBatches(x, labels, 32, seed=1, normalization=n)
                        for x, n in ((images, norm), (norm.apply(images), None)))
    stored.start_epoch(0)
    prepared.start_epoch(0)
    for step in range(2):
        np.testing.assert_array_equal(stored.next_batch(None, tf.constant(step, tf.int64))[0].numpy(),
                                      prepared.next_batch(None, tf.constant(step, tf.int64))[0].numpy())


def test_aligned_splits_are_read_in_place_and_anything_else_is_copied():
    from mnist_pipeline.data.datasets import shared_tensor
    from mnist_pipeline.data.prepare import ALIGNMENT, aligned_rows

    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    rows = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    split = aligned_rows(images, rows)
    assert split.ctypes.data % ALIGNMENT == 0
    assert split.flags.c_contiguous
    assert split.dtype == np.uint8
    np.testing.assert_array_equal(split, images[rows])
    tensor = shared_tensor(split)
    split[0, 0, 0] ^= 0xFF  # only to prove the sharing: nothing changes a split in the pipeline
    assert int(tensor[0, 0, 0]) == int(split[0, 0, 0])  # one buffer: TensorFlow holds no copy
    np.testing.assert_array_equal(tensor.numpy(), split)

    buffer = np.zeros(784 + 2 * ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT + 1
    misaligned = buffer[start:start + 784].reshape(1, 28, 28)  # TensorFlow's kernels would abort on it
    read_only = np.frombuffer(bytes(784), np.uint8).reshape(1, 28, 28)
    for array in (misaligned, read_only, images[::2]):
        copied = shared_tensor(array)
        np.testing.assert_array_equal(copied.numpy(), array)
        if array.flags.writeable:
            array.flat[0] ^= 0xFF
            assert int(copied.numpy().flat[0]) != int(array.flat[0])
    # A gather and a warp of the in-place tensor run like any other (a misaligned buffer aborted them).
    warped = Augmentation(rotation=0.05)(tf.cast(tf.gather(tensor, [0, 2])[..., None], tf.float32) / 255,
                                         tf.constant([0, 1], tf.int64))
    assert warped.shape == (2, 28, 28, 1)
