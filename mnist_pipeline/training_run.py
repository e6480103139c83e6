"""One run's training and test on a built setup: fit with checkpoints and history, test, save the model.

`pipeline.run` calls `train_and_test` with a `RunContext`; the chief also writes the training's files to the
run folder (history, checkpoints, model, model summary, report data), other workers of a cluster only train.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_pipeline import distribute
from mnist_pipeline.calibration import calibrate
from mnist_pipeline.config import CLASS_NAMES, RunConfig
from mnist_pipeline.data.prepare import Splits
from mnist_pipeline.errors import Interrupted, plural
from mnist_pipeline.fingerprints import sha256_arrays
from mnist_pipeline.report_data import write_report_data
from mnist_pipeline.reports import run_folder
from mnist_pipeline.reports.metrics import confusion_matrix, per_class_table, unsure_threshold
from mnist_pipeline.run_metrics import RunMetrics, TestMetrics
from mnist_pipeline.shapes import IMAGE_SHAPE
from mnist_pipeline.startup import Runtime
from mnist_pipeline.training_setup import build_training

if TYPE_CHECKING:
    from mnist_pipeline.pipeline import Events


@dataclass(frozen=True)
class RunContext:
    """What one run trains on and where it writes, as `pipeline.run` resolved it."""

    cfg: RunConfig
    splits: Splits
    source: str  # where the data was read from (RawData.source)
    runtime: Runtime
    events: Events
    run_dir: Path | None  # None on a worker of a fresh run (only the chief writes; workers read it to resume)
    resumed: bool
    test: bool = True  # False for a sweep's trial: the test split stays unseen
    start_weights: list | None = None  # fine-tuning: the weights of `model.init_from`
    started: str = ""  # ISO time the run first started (kept on resume)
    wall_start: float = 0.0  # time.perf_counter() when this process started the run
    budget: dict | None = None  # metrics.json's budget
    origin: dict | None = None  # continued_from / init_from, from fingerprint.json

    @property
    def chief(self) -> bool:
        return self.runtime.topology.chief


def train_and_test(ctx: RunContext, board=None) -> RunMetrics:
    """Train and test; on the chief, also write history, checkpoints, model and report data to `ctx.run_dir`,
    and TensorBoard events to `board` (a `tensorboard_events.TensorBoardEvents`, or None). Other workers of a
    cluster take part in every step, checkpoint and test, and write nothing."""
    from mnist_pipeline.checkpoints import Checkpointer
    from mnist_pipeline.data.datasets import evaluation_batches
    from mnist_pipeline.models.blocks import describe_layers

    cfg, splits, events, run_dir, topology = ctx.cfg, ctx.splits, ctx.events, ctx.run_dir, ctx.runtime.topology
    training = cfg.training
    setup = build_training(cfg, splits, ctx.runtime.strategy, ctx.runtime.device)
    model, trainer, batches, early_stopping = setup.model, setup.trainer, setup.batches, setup.early_stopping
    _say_setup(ctx, setup)
    if ctx.start_weights is not None:  # fine-tuning; a resumed run's weights come from its checkpoint instead
        model.set_weights(ctx.start_weights)
        events.log(f"starting from the weights of {cfg.model.init_from}")
    checkpointer = Checkpointer(run_dir, model, trainer.optimizer, setup.schedule, early_stopping,
                                topology.to_dict(), writes_folder=ctx.chief, precision=ctx.runtime.precision.policy)
    state = None
    if ctx.resumed:
        state = checkpointer.restore()
        events.log(f"going on from the checkpoint after epoch {state.next_epoch} (of {training.epochs})")

    def on_epoch(record, state) -> None:
        checkpointer.save(state)  # on every worker: tf.distribute may need each of them to save
        if ctx.chief:
            run_folder.write_history(run_dir, [r.to_dict() for r in state.history])  # a crash keeps the epochs
        if board:
            board.epoch(record, model)
        events.epoch(record, training.epochs)
        if state.stopped_early:
            events.log(f"early stopping: {early_stopping.monitor} did not improve for "
                       f"{plural(early_stopping.patience, 'epoch')}")

    first_step_at: list[float] = []  # wall-clock time the first group of steps ended (command-to-first-step)

    def on_step(progress) -> None:
        if not first_step_at:
            first_step_at.append(time.time())
        events.step(progress)

    with distribute.lost_workers(topology):  # another worker dying or hanging: one line, not TensorFlow's
        fit = trainer.fit(batches, setup.val_data, training.epochs, schedule=setup.schedule,
                          early_stopping=early_stopping, state=state, on_step=on_step, on_epoch=on_epoch,
                          on_losses=board.step_losses if board else None,
                          stop_requested=events.stop_requested, statistics_data=setup.statistics_data)
        # fit stops after the last epoch too, when asked (the run is then resumable with every epoch done, and
        # `--resume` only tests and writes the files); once those are being written, finishing is quicker
        # than stopping (the CLI says so).
        if ctx.test:
            events.log("testing, then writing the model and the report")
            test_data = evaluation_batches(splits.x_test, splits.y_test, training.batch_size, ctx.runtime.strategy,
                                           splits.normalization)
            test_loss, test_accuracy, probabilities = trainer.test(test_data, probabilities=True)
            val_probabilities = trainer.test(setup.val_data, probabilities=True)[2]
            # predict flags answers below the confidence at which this model's validation answers were
            # right less than 90% of the time: chosen on validation, so the test split stays untouched.
            unsure_below = unsure_threshold(val_probabilities, splits.y_val)
            # The temperature is fitted on validation too; the test split only scores it.
            calibrated = calibrate(val_probabilities, splits.y_val, probabilities, splits.y_test)
            events.log(f"calibration: temperature {calibrated.temperature:.3f} fitted on validation; test ECE "
                       f"{calibrated.test_before.ece:.2%} -> {calibrated.test_after.ece:.2%}")  # fits 80 columns
            if events.stop_requested():
                raise Interrupted("stopped during the test, after the last epoch")
    if board and ctx.test:
        board.test(test_loss, test_accuracy, fit.best_epoch)
    if ctx.chief:
        save_model(model, run_dir / run_folder.MODEL)
        run_folder.write_json(run_dir / run_folder.MODEL_SUMMARY, {"layers": describe_layers(model, IMAGE_SHAPE)})
        if ctx.test:
            write_report_data(run_dir, model, splits, probabilities, setup.augmentation, training.seed)
        if ctx.test and cfg.output.corruptions:
            _score_corruptions(ctx, model, calibrated.to_dict())
    tested = None
    if ctx.test:
        names = CLASS_NAMES[cfg.data.dataset]
        confusion = confusion_matrix(splits.y_test, probabilities.argmax(axis=1), len(names))
        tested = TestMetrics(test_loss, test_accuracy, unsure_below, per_class_table(confusion, names),
                             confusion.tolist(), calibrated.to_dict())
    best = fit.history[fit.best_epoch - 1]
    return RunMetrics(
        tested=ctx.test, best_epoch=fit.best_epoch, best_val_loss=best.val_loss,
        best_val_accuracy=best.val_accuracy, epochs=len(fit.history), stopped_early=fit.stopped_early,
        parameters=int(model.count_params()), train_seconds=round(sum(r.seconds for r in fit.history), 2),
        model=cfg.model.name, traces=trainer.tracing_counts(), batches=batches.placement,
        jit_compile=trainer.jit_compile, jit_compile_reason=setup.jit_reason, replicas=topology.replicas,
        distribute=topology.to_dict(), weights_sha256=sha256_arrays(model.get_weights()),
        first_step_at=first_step_at[0] if first_step_at else None, test=tested)


def _say_setup(ctx: RunContext, setup: Any) -> None:
    """The model line and the XLA line, said before the first steps (which wait for the compile)."""
    cfg, events, topology = ctx.cfg, ctx.events, ctx.runtime.topology
    events.log(f"model: {cfg.model.name}, {setup.model.count_params():,} parameters; "
               f"{topology.describe(ctx.runtime.device)}; {plural(cfg.training.epochs, 'epoch')} of "
               f"{plural(setup.batches.steps_per_epoch, 'step')}")
    if setup.trainer.jit_compile:
        events.log(f"XLA: on ({setup.jit_reason}); compiling first")
    elif setup.jit_wanted:
        events.log("XLA: off under a tf.distribute strategy (its all-reduces and per-replica batches run "
                   "outside XLA; Keras's fit() does the same)")
    else:
        events.log(f"XLA: off ({setup.jit_reason})")


def _score_corruptions(ctx: RunContext, model, calibration: dict) -> None:
    """output.corruptions: robustness.json, scored as `mnist evaluate --corruptions` scores a saved run."""
    from mnist_pipeline.inference import LoadedRun
    from mnist_pipeline.robustness import score_corruptions, write_robustness

    ctx.events.log("scoring the test split under MNIST-C's corruptions (output.corruptions)")
    # metrics.json is not written yet: its calibration is all of it the scoring reads (the temperature).
    run = LoadedRun(ctx.run_dir, ctx.cfg, ctx.splits.normalization, {"calibration": calibration}, model)
    result = write_robustness(ctx.run_dir, score_corruptions(run, ctx.splits.x_test, ctx.splits.y_test), ctx.source)
    ctx.events.log(f"corruptions: mean accuracy {result['mean_accuracy']:.4f} over {len(result['corruptions'])}, "
                   f"clean {result['clean']['accuracy']:.4f} ({run_folder.ROBUSTNESS})")


def save_model(model, path: Path) -> None:
    """model.keras, written under a temporary name and renamed: a failed save never leaves half a model."""
    run_folder.write_atomically(path, model.save, suffix=".keras", action="save the model")  # Keras wants the suffix
