"""The training loop: optimizer, train metrics and the compiled train steps; validation and test through
`evaluation.Evaluation`.

Read it as `Trainer.fit` -> `_steps` (one compiled group of steps) -> `_learning_step` (one learning step).
Works on any `keras.Model` that maps (batch, 28, 28, 1) images to (batch, NUM_CLASSES) logits, on one device
or on the replicas of a tf.distribute strategy: build the model, optimizer and `Trainer` inside
`strategy.scope()`. No file I/O and no printing: progress goes out through callbacks.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline.errors import Interrupted, TrainingDiverged
from mnist_pipeline.evaluation import Evaluation, PhaseMetrics, per_example_loss_fn, smoothed_cross_entropy
from mnist_pipeline.precise_bn import PreciseBatchNorm
from mnist_pipeline.schedules import EarlyStopping, LearningRateSchedule


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


@dataclass(frozen=True)
class StepProgress:
    """Where `fit` is, after each group of steps (for progress bars)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    seconds: float  # since the epoch began
    running: Callable[[], tuple[float, float]]  # the epoch's mean (loss, accuracy) so far; waits for the device


@dataclass
class FitState:
    """Everything `fit` needs to continue where it left off; a checkpoint saves it after every epoch."""

    next_epoch: int = 0  # 0-based index of the next epoch to train
    history: list[EpochRecord] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int = 0
    best_weights: list[np.ndarray] | None = None
    stopped_early: bool = False


def make_optimizer(name: str, learning_rate: float, momentum: float, weight_decay: float = 0.0,
                   ema: float = 0.0) -> keras.optimizers.Optimizer:
    """Keras's own optimizers. `weight_decay` is decoupled from the gradient (Keras applies it as
    var -= lr * weight_decay * var, AdamW's rule) and spares biases and batch norm's scales and offsets:
    decaying those only fights the normalization. `ema` > 0 keeps Keras's moving average of the trainable
    weights as optimizer variables (so checkpoints hold it); `Trainer` evaluates with it."""
    # weight_decay=None, not 0: Keras would otherwise spend a multiply per variable per step on nothing.
    options = {"learning_rate": learning_rate, "weight_decay": weight_decay or None, "use_ema": ema > 0,
               "ema_momentum": ema}
    optimizer = (keras.optimizers.SGD(momentum=momentum, **options) if name == "sgd"
                 else keras.optimizers.Adam(**options))
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


@dataclass
class StepGroup:
    """Up to `steps_per_execution` train steps in one graph call, on batches of one source."""

    function: Any  # the tf.function: (feed, count) -> (steps_per_execution,) losses, the first `count` valid

    def __call__(self, feed, count: int) -> list[float]:
        return self.function(feed, tf.constant(count)).numpy()[:count].tolist()  # a tensor count: one trace

    @property
    def traces(self) -> int:
        return self.function.experimental_get_tracing_count()


class Trainer:
    """Owns the model, optimizer, loss and metrics, and the compiled steps that use them."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, global_batch_size: int,
                 jit_compile: bool = False, steps_per_execution: int = 1, label_smoothing: float = 0.0,
                 test_time_flip: bool = False, strategy: tf.distribute.Strategy | None = None):
        self.model = model
        self.strategy = strategy or tf.distribute.get_strategy()
        if keras.mixed_precision.global_policy().compute_dtype == "float16":
            # float16 gradients underflow without loss scaling; only compile() wraps the optimizer by itself.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.loss_fn = per_example_loss_fn()
        self.train_metrics = PhaseMetrics("train")
        self.label_smoothing = label_smoothing
        # Batch norm's statistics recomputed for the weights before each validation (see precise_bn), when
        # `fit` is given training batches for it; models without a `stack` keep Keras's moving averages.
        self.precise_bn = PreciseBatchNorm(model) if hasattr(model, "stack") else None
        self.validate = Evaluation(model, "val", test_time_flip, self.strategy)
        self.test = Evaluation(model, "test", test_time_flip, self.strategy)  # apart from validation's metrics
        self.optimizer.build(model.trainable_variables)
        # Every step's learning rate for the current epoch, written by `begin_epoch`: the schedule can move
        # the rate each step with no Python round trip, inside grouped steps too. Until then, one rate.
        self.step_rates = tf.Variable([float(self.learning_rate)], shape=tf.TensorShape([None]), trainable=False,
                                      name="step_rates")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        # No XLA under a strategy: its all-reduces and per-replica datasets run outside XLA clusters (Keras's
        # own fit() turns XLA off there too). `jit_compile` says what was really used.
        self.jit_compile = jit_compile and strategy is None and not tf.distribute.has_strategy()
        self.steps_per_execution = steps_per_execution
        # One learning step on one replica's batch, compiled by XLA when asked: the group around it is too,
        # when its batches are made in the graph (see `compile_group`).
        self.learning_step = tf.function(self._learning_step, jit_compile=self.jit_compile)
        self.train_group: StepGroup | None = None  # built by `compile_group` for one batch source
        self._batches = None  # that source, which `_steps` draws from

    def fit(self, batches, val_data: Iterable, epochs: int, *, schedule: LearningRateSchedule | None = None,
            early_stopping: EarlyStopping | None = None, state: FitState | None = None,
            on_step: Callable[[StepProgress], None] | None = None,
            on_losses: Callable[[int, list[float]], None] | None = None,
            on_epoch: Callable[[EpochRecord, FitState], None] | None = None,
            stop_requested: Callable[[], bool] = lambda: False,
            statistics_data: Iterable | None = None) -> FitResult:
        """Train up to `epochs` epochs on `batches` (a `data.datasets.BatchSource`).

        Validates after every epoch, then calls `on_epoch(record, state)` (the moment to checkpoint), and
        leaves the model holding the weights with the lowest validation loss. `on_step` gets a `StepProgress`
        after each group of steps. `on_losses(first, losses)` gets
        each group's per-step losses (the objective minimized), `first` being the first one's 1-based global
        step. A `state` from a checkpoint (with the model, optimizer and policies restored alongside)
        continues a run exactly. With `statistics_data` (`data.datasets.statistics_batches`), batch norm's
        statistics are recomputed on it for the weights each validation sees (precise batch norm).
        Raises TrainingDiverged on a non-finite loss, and Interrupted after the group of steps (or the epoch's
        end, checkpoint included) during which `stop_requested()` became true.
        """
        state = state or FitState()
        steps_per_epoch = batches.steps_per_epoch
        schedule = schedule or LearningRateSchedule("constant", self.learning_rate, epochs)
        group = self.compile_group(batches)
        for epoch in range(state.next_epoch, epochs):
            if state.stopped_early:
                break
            start = time.perf_counter()
            rates = [schedule.rate(epoch + step / steps_per_epoch) for step in range(steps_per_epoch)]
            feed, step = self.begin_epoch(batches, epoch, rates), 0
            while step < steps_per_epoch:
                losses = group(feed, min(self.steps_per_execution, steps_per_epoch - step))
                if on_losses:
                    on_losses(epoch * steps_per_epoch + step + 1, losses)
                for loss in losses:
                    step += 1  # reading the losses waits for the steps: a NaN is seen at once
                    if not math.isfinite(loss):
                        raise TrainingDiverged(f"the training loss became {loss} at epoch {epoch + 1}, step "
                                               f"{step}; lower training.learning_rate or add normalization")
                if on_step:
                    on_step(StepProgress(epoch + 1, epochs, step, steps_per_epoch, time.perf_counter() - start,
                                         self.train_metrics.result))
                if stop_requested():
                    raise Interrupted(f"stopped during epoch {epoch + 1} (step {step})")
            record = self._end_epoch(epoch, val_data, time.perf_counter() - start, schedule.rate(epoch), state,
                                     statistics_data)
            schedule.observe(record.val_loss)
            if early_stopping and early_stopping.should_stop(getattr(record, early_stopping.monitor)):
                state.stopped_early = True
            if on_epoch:
                on_epoch(record, state)
            if stop_requested():  # asked during validation or the checkpoint: the epoch is saved, stop here
                last = epoch + 1 == epochs or state.stopped_early  # the caller would test next
                raise Interrupted("stopped after the last epoch, before the test" if last
                                  else f"stopped after epoch {epoch + 1}")
        if state.best_weights is not None:
            self.model.set_weights(state.best_weights)
        return FitResult(state.history, state.best_epoch, state.best_val_loss, state.stopped_early)

    def compile_group(self, batches) -> StepGroup:
        """The compiled group of train steps on `batches` (a `data.datasets.BatchSource`), built once per source
        (`fit` does; benchmarks/bench.py times groups without fit's bookkeeping). When the source makes its
        batches in the graph, XLA (if on) compiles the whole group, batches and rate lookups included, into one
        cluster; otherwise only the learning step."""
        self._batches = batches  # captured by the group's one trace
        self.train_group = StepGroup(tf.function(self._steps, jit_compile=self.jit_compile and batches.compilable))
        return self.train_group

    def _steps(self, feed, count):
        """`count` train steps; their losses in a buffer of static size (XLA needs one), the first `count` valid."""
        losses = tf.zeros([self.steps_per_execution])
        for i in tf.range(count):
            step = self.step_in_epoch.read_value()
            self.optimizer.learning_rate.assign(self.step_rates[tf.minimum(step, tf.cast(
                tf.shape(self.step_rates)[0] - 1, tf.int64))])
            self.step_in_epoch.assign_add(1)
            images, labels = self._batches.next_batch(feed, step)
            # Each replica learns from its slice; the losses are shares of the global mean, so they add up.
            per_replica = self.strategy.run(self.learning_step, args=(images, labels))
            loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            losses = tf.tensor_scatter_nd_update(losses, [[i]], [tf.cast(loss, tf.float32)])
        return losses

    def _learning_step(self, images, labels):
        """One learning step on this replica's batch; returns this replica's share of the loss."""
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss_fn(labels, logits)  # plain cross-entropy: what the metrics report
            objective = (smoothed_cross_entropy(labels, logits, self.label_smoothing) if self.label_smoothing
                         else per_example)
            # Over the global batch: the strategy sums the replicas' gradients.
            loss = tf.nn.compute_average_loss(objective, global_batch_size=self.global_batch_size)
            if self.model.losses:  # L1/L2 weight penalties, divided by the number of replicas for the same reason
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            # The identity unless the optimizer scales losses (mixed precision); apply() then unscales the
            # gradients and skips a step whose gradients overflowed.
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
        self.optimizer.apply(gradients, self.model.trainable_variables)
        self.train_metrics.update(per_example, labels, logits)
        return loss

    def begin_epoch(self, batches, epoch: int, step_rates: list[float]):
        """Ready epoch `epoch` of `batches` (0-based) and reset the step count and metrics; `step_rates[i]` is
        step i's learning rate (the last one holds for any later step). Returns the feed for the group."""
        self.step_rates.assign(step_rates)
        self.step_in_epoch.assign(0)
        self.train_metrics.reset()
        return batches.start_epoch(epoch)

    def tracing_counts(self) -> dict[str, int]:
        """How often each compiled function was traced: 1 if used, else 0; more means retracing."""
        return {"train_group": self.train_group.traces if self.train_group else 0,
                "validate": self.validate.step.experimental_get_tracing_count(),
                "test": self.test.step.experimental_get_tracing_count()}

    @property
    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _end_epoch(self, epoch: int, val_data: Iterable, train_seconds: float, learning_rate: float,
                   state: FitState, statistics_data: Iterable | None = None) -> EpochRecord:
        with self.averaged_weights():
            if statistics_data is not None and self.precise_bn:
                self.precise_bn.recompute(statistics_data)
            val_loss, val_accuracy = self.validate(val_data)
            if state.best_val_loss is None or val_loss < state.best_val_loss:
                state.best_val_loss, state.best_epoch, state.best_weights = (val_loss, epoch + 1,
                                                                             self.model.get_weights())
        loss, accuracy = self.train_metrics.result()
        record = EpochRecord(epoch + 1, loss, accuracy, val_loss, val_accuracy, learning_rate, train_seconds)
        state.history.append(record)
        state.next_epoch = epoch + 1
        return record

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within: the model holds the optimizer's moving average of its weights (when `ema` is on), as
        validation, the best weights and so the test and the saved model see them. Training goes on from
        the raw weights, restored on the way out."""
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)  # under loss scaling
        if not optimizer.use_ema:
            yield
            return
        variables = self.model.trainable_variables
        raw = [variable.numpy() for variable in variables]
        optimizer.finalize_variable_values(variables)  # Keras's way to copy the average into the model
        try:
            yield
        finally:
            for variable, value in zip(variables, raw, strict=True):
                variable.assign(value)
