import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_digits
from mnist_pipeline.data.augment import Augmentation
from mnist_pipeline.data.datasets import (
    InStepBatches,
    PipelinedBatches,
    evaluation_batches,
    training_batches,
)
from mnist_pipeline.models.registry import build_model
from mnist_pipeline.schedules import LearningRateSchedule
from mnist_pipeline.trainer import Trainer, make_optimizer


def data(n, seed):
    x, y = make_digits(n, seed)
    return (x[..., None] / 255).astype(np.float32), y.astype(np.int32)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_train_steps_lower_the_loss_on_a_fixed_batch(optimizer):
    keras.utils.set_random_seed(0)
    x, y = data(64, 0)
    model = build_model("mlp", units=32)
    trainer = Trainer(model, make_optimizer(optimizer, 0.01 if optimizer == "adam" else 0.1, 0.9), 64)
    losses = [float(trainer.learning_step(x, y)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.learning_step.experimental_get_tracing_count() == 1


def test_eval_step_traces_once_across_a_partial_batch():
    x, y = data(50, 1)
    trainer = Trainer(build_model("mlp", units=8), make_optimizer("adam", 1e-3, 0.9), 16)
    loss, accuracy, probabilities = trainer.validate(evaluation_batches(x, y, 16), probabilities=True)
    assert trainer.validate.step.experimental_get_tracing_count() == 1
    # Epoch means over all 50 examples, not the last (partial) batch.
    logits = trainer.model(x, training=False)
    assert loss == pytest.approx(float(tf.reduce_mean(trainer.loss_fn(y, logits))), rel=1e-5)
    assert accuracy == pytest.approx(float(np.mean(np.argmax(logits, axis=1) == y)))
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-7)


def test_fit_learns_keeps_the_best_weights_and_records_history():
    keras.utils.set_random_seed(0)
    (x, y), (xv, yv) = data(400, 1), data(100, 2)
    model = build_model("mlp", units=32)
    trainer = Trainer(model, make_optimizer("adam", 3e-3, 0.9), 32)
    batches = InStepBatches(x, y, 32, seed=0)
    steps, epochs = [], []
    result = trainer.fit(batches, evaluation_batches(xv, yv, 32), 4,
                         on_step=lambda p: steps.append((p.step, p.steps)),
                         on_epoch=lambda record, state: epochs.append(record))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert epochs == result.history
    assert steps[-1] == (12, 12)
    assert len(steps) == 4 * 12
    best = result.history[result.best_epoch - 1]
    assert best.val_loss == min(r.val_loss for r in result.history) == result.best_val_loss
    assert result.history[-1].val_accuracy > 0.5  # 10 classes: chance is 0.1
    # The model now holds the best epoch's weights: re-validating reproduces that epoch's numbers.
    val_loss, val_accuracy = trainer.validate(evaluation_batches(xv, yv, 32))
    assert (val_loss, val_accuracy) == pytest.approx((best.val_loss, best.val_accuracy), rel=1e-6)
    assert result.history[0].learning_rate == pytest.approx(3e-3)


def test_mixed_precision_wraps_the_optimizer_and_still_learns():
    # Runs (slowly) on CPU, which is enough to check the loss-scaling path the GPU would take.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        x, y = data(64, 0)
        model = build_model("mlp", units=32)
        trainer = Trainer(model, make_optimizer("adam", 0.01, 0.9), 64)
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.stack[1].compute_dtype == "float16"
        assert model(x).dtype == "float32"  # logits stay float32
        losses = [float(trainer.learning_step(x, y)) for _ in range(30)]
        assert losses[-1] < 0.5 * losses[0]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _grouped_history(group: int, in_graph: bool, jit_compile: bool = False):
    """3 epochs of a small MLP on 300 examples (9 steps of 32 an epoch) under a rate that moves every step."""
    (x, y), (xv, yv) = data(300, 1), data(60, 2)
    keras.utils.set_random_seed(0)
    trainer = Trainer(build_model("mlp", units=16), make_optimizer("adam", 3e-3, 0.9), 32,
                      steps_per_execution=group, jit_compile=jit_compile)
    batches = (InStepBatches if in_graph else PipelinedBatches)(x, y, 32, seed=0)
    steps: list[int] = []
    schedule = LearningRateSchedule("cosine", 3e-3, 3, warmup_epochs=1)
    result = trainer.fit(batches, evaluation_batches(xv, yv, 32), 3,
                         schedule=schedule, on_step=lambda p, seen=steps: seen.append(p.step))
    return trainer, steps, [(r.loss, r.accuracy, r.val_loss, r.learning_rate) for r in result.history]


@pytest.mark.parametrize("in_graph", [False, True])
def test_grouped_steps_train_exactly_like_single_steps(in_graph):
    _, _, single = _grouped_history(1, in_graph)
    trainer, steps, grouped = _grouped_history(4, in_graph)  # groups of 4, 4 and a remainder of 1
    assert steps == [4, 8, 9] * 3
    assert trainer.train_group.traces == 1  # any group size, one trace
    assert grouped == single


def test_batches_gathered_in_the_graph_train_exactly_like_batches_from_tf_data():
    _, _, from_tf_data = _grouped_history(4, in_graph=False)
    _, _, in_graph = _grouped_history(4, in_graph=True)
    assert in_graph == from_tf_data


def test_the_placement_rule():
    x, y = data(64, 0)
    zoom = Augmentation(zoom=0.1)
    assert type(training_batches(x, y, 32, 0)) is InStepBatches  # plain batches: made in the step
    assert type(training_batches(x, y, 32, 0, zoom)) is PipelinedBatches  # TensorFlow's warp kernel, in tf.data
    assert type(training_batches(x, y, 32, 0, zoom, jit_compile=True)) is InStepBatches  # XLA compiles the warp
    assert type(training_batches(x, y, 32, 0, jit_compile=True, gpu=True)) is PipelinedBatches  # prefetched


@pytest.mark.slow
def test_augmented_batches_are_made_in_an_xla_step_and_it_learns():
    (x, y), (xv, yv) = data(320, 1), data(100, 2)
    keras.utils.set_random_seed(0)
    trainer = Trainer(build_model("mlp", units=32), make_optimizer("adam", 3e-3, 0.9), 32, jit_compile=True,
                      steps_per_execution=4)
    augmentation = Augmentation(rotation=0.02, translation=0.05, erasing=0.3)
    batches = training_batches(x, y, 32, seed=0, augmentation=augmentation, jit_compile=True)
    assert batches.compilable  # XLA compiles the warp into the step
    result = trainer.fit(batches, evaluation_batches(xv, yv, 32), 4)
    assert trainer.tracing_counts() == {"train_group": 1, "validate": 1, "test": 0}
    assert result.history[-1].val_accuracy > 0.4  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_a_group_compiled_whole_with_xla_trains_like_the_plain_graph():
    trainer, steps, xla = _grouped_history(4, in_graph=True, jit_compile=True)
    _, _, plain = _grouped_history(4, in_graph=True)
    assert steps == [4, 8, 9] * 3
    assert trainer.train_group.traces == 1
    np.testing.assert_allclose(np.array(xla), np.array(plain), rtol=1e-4)  # XLA may fuse float ops differently
    assert xla[-1][1] > 0.3  # and it learns (chance is 0.1)


def test_warm_up_and_cosine_move_the_rate_every_step():
    (x, y), (xv, yv) = data(320, 1), data(60, 2)
    trainer = Trainer(build_model("mlp", units=16), make_optimizer("adam", 1.0, 0.9), 32)
    batches = InStepBatches(x, y, 32, seed=0)  # 10 steps an epoch
    schedule = LearningRateSchedule("cosine", 4e-3, 3, min_learning_rate=1e-4, warmup_epochs=1)
    seen: list[tuple[int, float]] = []

    def on_step(progress):
        seen.append((progress.epoch - 1 + progress.step / progress.steps, trainer.learning_rate))

    result = trainer.fit(batches, evaluation_batches(xv, yv, 32), 3,
                         schedule=schedule, on_step=on_step)
    assert len(seen) == 30
    for position, rate in seen:  # the rate the step that ended at `position` took: warm-up from 0, then cosine
        assert rate == pytest.approx(schedule.rate(position - 0.1), rel=1e-6, abs=1e-12)
    assert seen[5][1] == pytest.approx(2e-3)
    assert seen[-1][1] == pytest.approx(schedule.rate(2.9))
    # history records each epoch's first rate
    assert [r.learning_rate for r in result.history] == pytest.approx([0.0, 4e-3, schedule.rate(2)])


def test_smoothed_cross_entropy_matches_keras_one_hot_label_smoothing():
    from mnist_pipeline.evaluation import smoothed_cross_entropy

    logits = tf.constant(np.random.default_rng(0).normal(0, 3, (6, 10)), tf.float32)
    labels = tf.constant([0, 3, 9, 2, 2, 7])
    for s in (0.0, 0.1, 0.3):
        keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s, reduction=None)
        expected = keras_loss(tf.one_hot(labels, 10), logits)
        np.testing.assert_allclose(smoothed_cross_entropy(labels, logits, s), expected, rtol=1e-5)


def test_label_smoothing_changes_the_objective_but_not_the_reported_loss():
    x, y = data(32, 3)
    results = {}
    for s in (0.0, 0.2):
        keras.utils.set_random_seed(0)
        trainer = Trainer(build_model("mlp", units=8), keras.optimizers.SGD(0.0), 32, label_smoothing=s)
        step_loss = float(trainer.learning_step(x, y))
        results[s] = (step_loss, trainer.train_metrics.result()[0])
    (plain_step, plain_reported), (smooth_step, smooth_reported) = results[0.0], results[0.2]
    assert smooth_step != pytest.approx(plain_step, rel=1e-3)  # a different objective...
    assert smooth_reported == pytest.approx(plain_reported, rel=1e-6) == plain_step  # ...the same cross-entropy


def test_test_time_flip_averages_each_image_with_its_mirror():
    keras.utils.set_random_seed(0)
    x, y = data(40, 4)
    model = build_model("cnn", filters=[4], convs_per_block=1, dense_units=8)
    from mnist_pipeline.evaluation import Evaluation

    loss, accuracy, probabilities = Evaluation(model, "test", test_time_flip=True)(
        evaluation_batches(x, y, 16), probabilities=True)
    expected = (tf.nn.softmax(model(x)) + tf.nn.softmax(model(x[:, :, ::-1]))).numpy() / 2
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(float(np.mean(-np.log(expected[np.arange(40), y]))), rel=1e-5)
    assert accuracy == pytest.approx(float(np.mean(expected.argmax(axis=1) == y)))
    plain = Evaluation(model, "test")(evaluation_batches(x, y, 16), probabilities=True)[2]
    assert not np.allclose(plain, probabilities)  # the digits are not mirror-symmetric


def test_bfloat16_computes_in_bfloat16_keeps_float32_logits_and_learns():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        x, y = data(64, 0)
        model = build_model("cnn", filters=[8], convs_per_block=1, dense_units=16, batch_norm=True)
        trainer = Trainer(model, make_optimizer("adam", 0.01, 0.9), 64)
        assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs no scaling
        assert model.stack[0].compute_dtype == "bfloat16"
        assert model(x).dtype == "float32"  # logits stay float32
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        losses = [float(trainer.learning_step(x, y)) for _ in range(30)]
        assert losses[-1] < 0.5 * losses[0]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_weight_decay_shrinks_kernels_by_rate_times_decay_and_spares_biases_and_batch_norm():
    x, y = data(64, 0)
    runs = {}
    for decay in (0.0, 0.5):
        keras.utils.set_random_seed(0)
        model = build_model("mlp", units=16, batch_norm=True)
        trainer = Trainer(model, make_optimizer("adam", 0.01, 0.9, weight_decay=decay), 64)
        before = [v.numpy() for v in model.trainable_variables]
        trainer.learning_step(x, y)
        variables = model.trainable_variables
        runs[decay] = before, [v.numpy() for v in variables], [v.name for v in variables]
    (start, plain, names), (_, decayed, _) = runs[0.0], runs[0.5]
    assert names == ["kernel", "gamma", "beta", "kernel", "bias"]
    for name, w0, a, b in zip(names, start, plain, decayed, strict=True):
        if name == "kernel":  # AdamW: the decay comes off the weights before the step, apart from the gradient
            np.testing.assert_allclose(b, a - 0.01 * 0.5 * w0, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def test_ema_validates_and_keeps_the_averaged_weights_and_trains_on_from_the_raw_ones():
    keras.utils.set_random_seed(0)
    (x, y), (xv, yv) = data(256, 1), data(64, 2)
    model = build_model("mlp", units=16)
    trainer = Trainer(model, make_optimizer("adam", 0.01, 0.9, ema=0.9), 32)
    averages = trainer.optimizer._model_variables_moving_average  # Keras's own; what the test checks against
    val = evaluation_batches(xv, yv, 32)
    result = trainer.fit(InStepBatches(x, y, 32, seed=0), val, 1)
    kept = [v.numpy() for v in model.trainable_variables]
    for weight, average in zip(kept, averages, strict=True):
        np.testing.assert_array_equal(weight, average.numpy())  # fit leaves the model on the average
    assert result.history[0].val_loss == pytest.approx(trainer.validate(val)[0], rel=1e-6)

    raw = [v.numpy() + 1.0 for v in model.trainable_variables]  # weights that are surely not the average
    model.set_weights(raw)
    with trainer.averaged_weights():
        for weight, average in zip(model.trainable_variables, averages, strict=True):
            np.testing.assert_array_equal(weight.numpy(), average.numpy())
    for weight, value in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)
    assert not any(np.allclose(a.numpy(), r) for a, r in zip(averages, raw, strict=True))


def test_without_ema_the_averaged_weights_are_the_weights():
    model = build_model("mlp", units=8)
    trainer = Trainer(model, make_optimizer("adam", 0.01, 0.9), 32)
    before = [v.numpy() for v in model.trainable_variables]
    with trainer.averaged_weights():
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables, strict=True))
