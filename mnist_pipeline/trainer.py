"""The training loop: loss, optimizer, per-phase metrics and the tf.function train / val / test steps.

Works on any `keras.Model` that maps (batch, 28, 28, 1) images to (batch, 10) logits. No file I/O and no
printing: progress goes out through callbacks. Build a `Trainer` (and the model and optimizer it gets)
inside `strategy.scope()` to distribute it; the loss is already averaged over the *global* batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline.errors import Interrupted, TrainingDiverged
from mnist_pipeline.schedules import EarlyStopping, LearningRateSchedule

IMAGE_SPEC = tf.TensorSpec([None, 28, 28, 1], tf.float32)
LABEL_SPEC = tf.TensorSpec([None], tf.int32)


@dataclass(frozen=True)
class EpochRecord:
    """One row of history.csv; column names follow Keras."""

    epoch: int  # 1-based
    loss: float  # mean cross-entropy over the epoch's training batches (weight penalties excluded)
    accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float  # at the epoch's first step
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FitResult:
    history: list[EpochRecord]
    best_epoch: int  # 1-based epoch whose weights the model holds after fit
    best_val_loss: float
    stopped_early: bool = False


@dataclass
class FitState:
    """Everything `fit` needs to continue where it left off; a checkpoint saves it after every epoch."""

    next_epoch: int = 0  # 0-based index of the next epoch to train
    history: list[EpochRecord] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int = 0
    best_weights: list[np.ndarray] | None = None
    stopped_early: bool = False


def make_optimizer(name: str, learning_rate: float, momentum: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    return keras.optimizers.Adam(learning_rate=learning_rate)


class _PhaseMetrics:
    """Epoch means of loss and accuracy for one phase (train, val or test)."""

    def __init__(self, phase: str):
        self.loss = keras.metrics.Mean(name=f"{phase}_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name=f"{phase}_accuracy")

    def update(self, per_example_loss, labels, logits) -> None:
        self.loss.update_state(per_example_loss)
        self.accuracy.update_state(labels, logits)

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
    """Loss, accuracy and (optionally) class probabilities of a model over a dataset, in one compiled step.

    The trainer validates and tests with it, and `mnist evaluate` re-runs it on a saved model, so the
    numbers it prints are computed exactly as the ones in metrics.json.
    """

    def __init__(self, model: keras.Model, phase: str, test_time_flip: bool = False):
        self.model = model
        self.test_time_flip = test_time_flip
        self.loss_fn = per_example_loss_fn()
        self.metrics = _PhaseMetrics(phase)
        # A None batch dimension lets the partial last batch reuse the same trace.
        self.step = tf.function(self._step, input_signature=[IMAGE_SPEC, LABEL_SPEC])

    def _step(self, images, labels):
        if self.test_time_flip:  # no single set of logits: the loss comes from the averaged probabilities
            probabilities = class_probabilities(self.model, images, test_time_flip=True)
            chosen = tf.gather(probabilities, labels, batch_dims=1)
            self.metrics.update(-tf.math.log(tf.maximum(chosen, 1e-7)), labels, probabilities)  # Keras's clip
            return probabilities
        logits = self.model(images, training=False)
        self.metrics.update(self.loss_fn(labels, logits), labels, logits)
        return tf.nn.softmax(logits)  # (batch, 10)

    def __call__(self, data: Iterable, probabilities: bool = False):
        """(loss, accuracy), or (loss, accuracy, (N, 10) probabilities) with `probabilities`."""
        self.metrics.reset()
        collected = [self.step(images, labels) for images, labels in data]
        loss, accuracy = self.metrics.result()
        if not probabilities:
            return loss, accuracy
        return loss, accuracy, np.concatenate([p.numpy() for p in collected]) if collected else np.zeros((0, 10))


class Trainer:
    """Owns the model, optimizer, loss and metrics, and the compiled steps that use them."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, global_batch_size: int,
                 jit_compile: bool = False, steps_per_execution: int = 1, label_smoothing: float = 0.0,
                 test_time_flip: bool = False):
        self.model = model
        if keras.mixed_precision.global_policy().compute_dtype == "float16":
            # float16 gradients underflow without loss scaling; only compile() wraps the optimizer by itself.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.loss_fn = per_example_loss_fn()
        self.train_metrics = _PhaseMetrics("train")
        self.label_smoothing = label_smoothing
        self.validate = Evaluation(model, "val", test_time_flip)
        self.test = Evaluation(model, "test", test_time_flip)  # kept apart from validation's metrics and trace
        self.optimizer.build(model.trainable_variables)
        # Every step's learning rate for the current epoch, written by `fit` before the epoch: the schedule can
        # move the rate each step with no Python round trip, inside grouped steps too. Until then, one rate.
        self.step_rates = tf.Variable([float(self.learning_rate)], shape=tf.TensorShape([None]), trainable=False,
                                      name="step_rates")
        self.step_in_epoch = tf.Variable(0, trainable=False, name="step_in_epoch",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # XLA compiles the step itself, not the rate lookup around it: inside the XLA cluster the lookup in a
        # variable of data-dependent length made the MLP's first compile take ~40 s instead of ~1 s.
        self._compiled_step = tf.function(self._learn_at_current_rate, jit_compile=jit_compile)
        self.train_step = tf.function(self._train_step)
        # Several steps per graph call: one Python round trip per group instead of per step.
        self.steps_per_execution = steps_per_execution
        self.train_steps = tf.function(self._train_steps)
        # Groups whose batches are gathered inside the graph (`_train_steps`), made in `run_steps` for the
        # batch source they capture.
        self.jit_compile = jit_compile
        self.train_steps_in_graph = None
        self._graph_batches = None
        # Same update, also returning each variable's gradient norm (for `mnist diagnose gradients`).
        self.train_step_with_gradient_norms = tf.function(self._train_step_with_gradient_norms)

    def _train_step(self, images, labels):
        self._next_step_rate()
        return self._compiled_step(images, labels)

    def _learn_at_current_rate(self, images, labels):
        return self._learn(images, labels)[0]

    def _next_step_rate(self):
        last = tf.shape(self.step_rates)[0] - 1
        self.optimizer.learning_rate.assign(self.step_rates[tf.minimum(self.step_in_epoch, last)])
        self.step_in_epoch.assign_add(1)

    def _train_steps(self, iterator, count):
        """`count` train steps; their losses in a buffer of static size (XLA needs one), the first `count` valid.

        Batches come from `iterator`, or, with iterator None, each step gathers its own from
        `self._graph_batches`: then the group, batches included, is one graph (under jit_compile one XLA
        cluster), with no tf.data iterator and no call between graphs per step. Side by side on the MLP, the
        in-graph XLA group trained at ~1.9x the images/s of the tf.data-fed one.
        """
        losses = tf.zeros([self.steps_per_execution])
        for i in tf.range(count):
            if iterator is None:
                step = tf.cast(self.step_in_epoch, tf.int64)  # read before the step moves it on
                loss = self._train_step(*self._graph_batches.batch(step))  # inlined: the group compiles whole
            else:
                loss = self.train_step(*next(iterator))
            losses = tf.tensor_scatter_nd_update(losses, [[i]], [tf.cast(loss, tf.float32)])
        return losses

    def _train_step_with_gradient_norms(self, images, labels):
        self._next_step_rate()
        loss, gradients = self._learn(images, labels)
        return loss, [tf.norm(g) for g in gradients]

    def _learn(self, images, labels):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss_fn(labels, logits)  # plain cross-entropy: what the metrics report
            objective = (smoothed_cross_entropy(labels, logits, self.label_smoothing) if self.label_smoothing
                         else per_example)
            loss = tf.nn.compute_average_loss(objective, global_batch_size=self.global_batch_size)
            if self.model.losses:  # L1/L2 weight penalties
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            # The identity unless the optimizer scales losses (mixed precision); apply() then unscales the
            # gradients and skips a step whose gradients overflowed.
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
        self.optimizer.apply(gradients, self.model.trainable_variables)
        self.train_metrics.update(per_example, labels, logits)
        return loss, gradients

    def tracing_counts(self) -> dict[str, int]:
        """How often each compiled function was traced: 1 if used, else 0; more means retracing."""
        functions = {"train_step": self.train_step, "train_steps": self.train_steps,
                     "train_steps_in_graph": self.train_steps_in_graph, "validate": self.validate.step,
                     "test": self.test.step}
        return {name: f.experimental_get_tracing_count() if f else 0 for name, f in functions.items()}

    @property
    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def fit(self, batches, val_data: Iterable, epochs: int, *, schedule: LearningRateSchedule | None = None,
            early_stopping: EarlyStopping | None = None, state: FitState | None = None,
            on_step: Callable[[int, int], None] | None = None,
            on_epoch: Callable[[EpochRecord, FitState], None] | None = None,
            stop_requested: Callable[[], bool] = lambda: False) -> FitResult:
        """Train up to `epochs` epochs on `batches` (a `data.datasets.TrainingBatches`: `epoch(e)` readies and
        returns epoch e's batches, e 0-based; `batch(step)` makes one in the graph when `in_graph`).

        Validates after every epoch, then calls `on_epoch(record, state)` (the moment to checkpoint), and
        leaves the model holding the weights with the lowest validation loss. A `state` from a checkpoint
        (with the model, optimizer and policies restored alongside) continues a run exactly.
        Raises TrainingDiverged on a non-finite loss, and Interrupted after the step during which
        `stop_requested()` became true.
        """
        state = state or FitState()
        steps_per_epoch = batches.steps_per_epoch
        schedule = schedule or LearningRateSchedule("constant", self.learning_rate, epochs)
        for epoch in range(state.next_epoch, epochs):
            if state.stopped_early:
                break
            start = time.perf_counter()
            rates = [schedule.rate(epoch + step / steps_per_epoch) for step in range(steps_per_epoch)]
            iterator, step = self.begin_epoch(batches, epoch, rates), 0
            while step < steps_per_epoch:
                losses = self.run_steps(batches, iterator, min(self.steps_per_execution, steps_per_epoch - step))
                for loss in losses:  # reading the losses waits for the steps: a NaN is seen at once
                    step += 1
                    if not math.isfinite(loss):
                        raise TrainingDiverged(f"the training loss became {loss} at epoch {epoch + 1}, step "
                                               f"{step}; lower training.learning_rate or add normalization")
                if on_step:
                    on_step(step, steps_per_epoch)
                if stop_requested():
                    raise Interrupted(f"stopped during epoch {epoch + 1} (step {step})")
            record = self._end_epoch(epoch, val_data, time.perf_counter() - start, schedule.rate(epoch), state)
            schedule.observe(record.val_loss)
            if early_stopping and early_stopping.should_stop(getattr(record, early_stopping.monitor)):
                state.stopped_early = True
            if on_epoch:
                on_epoch(record, state)
        if state.best_weights is not None:
            self.model.set_weights(state.best_weights)
        return FitResult(state.history, state.best_epoch, state.best_val_loss, state.stopped_early)

    def begin_epoch(self, batches, epoch: int, step_rates: list[float]):
        """Ready epoch `epoch` of `batches` (0-based) and reset the step count and metrics; `step_rates[i]` is
        step i's learning rate (the last one holds for any later step). Returns the iterator to give
        `run_steps`: over the epoch's tf.data batches, or None when the steps gather their own; read it to the
        end, or an abandoned iterator keeps prefetching and takes CPU from the steps."""
        self.step_rates.assign(step_rates)
        self.step_in_epoch.assign(0)
        self.train_metrics.reset()
        epoch_batches = batches.epoch(epoch)
        return None if batches.in_graph else iter(epoch_batches)

    def run_steps(self, batches, iterator, count: int) -> list[float]:
        """The next `count` train steps of the epoch `begin_epoch` readied, fed by the iterator it returned;
        their losses."""
        if iterator is None:
            if self._graph_batches is not batches:  # the graph captures the batch source: one per source
                self._graph_batches = batches
                self.train_steps_in_graph = tf.function(lambda n: self._train_steps(None, n),
                                                        jit_compile=self.jit_compile)
            losses = self.train_steps_in_graph(tf.constant(count))
        elif self.steps_per_execution == 1:
            images, labels = next(iterator)
            return [float(self.train_step(images, labels))]
        else:
            losses = self.train_steps(iterator, tf.constant(count))  # one trace for any count
        return losses.numpy()[:count].tolist()

    def _end_epoch(self, epoch: int, val_data: Iterable, train_seconds: float, learning_rate: float,
                   state: FitState) -> EpochRecord:
        val_loss, val_accuracy = self.validate(val_data)
        loss, accuracy = self.train_metrics.result()
        record = EpochRecord(epoch + 1, loss, accuracy, val_loss, val_accuracy, learning_rate, train_seconds)
        state.history.append(record)
        state.next_epoch = epoch + 1
        if state.best_val_loss is None or val_loss < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.best_weights = val_loss, epoch + 1, self.model.get_weights()
        return record
