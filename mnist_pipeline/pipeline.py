"""`run(cfg)`: the one place that wires config -> runtime -> data -> model -> trainer -> run folder.

Imports TensorFlow, so the CLI imports this module only inside commands that train. Talks to the user only
through the `Events` callbacks it is given.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline import runtime
from mnist_pipeline.config import CLASS_NAMES, RunConfig, to_yaml
from mnist_pipeline.data.prepare import Splits, class_counts, prepare_splits
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import ConfigError, Interrupted, OutputError, PipelineError
from mnist_pipeline.reports import run_folder as rf
from mnist_pipeline.reports.document import write_report
from mnist_pipeline.reports.metrics import confusion_matrix, most_confident_mistakes, per_class_table


def _ignore(*_: Any) -> None:
    return None


@dataclass
class Events:
    """How a run reports progress; the CLI prints, tests can collect."""

    log: Callable[[str], None] = _ignore
    step: Callable[[int, int], None] = _ignore  # (step in epoch, steps per epoch)
    epoch: Callable[[Any, int], None] = _ignore  # (EpochRecord, total epochs)
    stop_requested: Callable[[], bool] = lambda: False  # polled after every step (SIGINT / SIGTERM)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def run(cfg: RunConfig, events: Events | None = None, resume: Path | None = None) -> RunResult:
    """Train, validate and test the configured model; write the run folder; return its path and metrics.

    With `resume`, continue that run folder from its last checkpoint (cfg is then its saved config).
    """
    events = events or Events()
    wall_start = time.perf_counter()
    device, deterministic = start_runtime(cfg)
    raw, splits = load_data(cfg)
    events.log(f"data: {cfg.data.dataset} from {raw.source}; train {splits.sizes['train']}, "
               f"val {splits.sizes['val']}, test {splits.sizes['test']}; {cfg.data.normalization}")

    if resume is None:
        run_dir = rf.create_run_dir(cfg.output.dir, cfg.run_name)
        started = rf.utc_now().isoformat(timespec="seconds")
    else:
        run_dir, started = resume, rf.read_json(resume / rf.STATUS).get("started", "")
    rf.write_status(run_dir, "running", started=started, pid=os.getpid())
    try:
        if resume is None:
            rf.write_text(run_dir / rf.CONFIG, to_yaml(cfg))
            rf.write_json(run_dir / rf.NORMALIZATION, splits.normalization.to_dict())
        metrics = _train_and_test(cfg, splits, run_dir, events, device, resume is not None)
        metrics.update(
            wall_seconds=round(time.perf_counter() - wall_start, 2), device=device, deterministic=deterministic,
            seed=cfg.training.seed, dataset=cfg.data.dataset, data_source=raw.source, split_sizes=splits.sizes,
            train_class_counts=class_counts(splits.y_train), versions=runtime.library_versions(),
            jit_compile=cfg.training.jit_compile, mixed_precision=cfg.training.mixed_precision,
            resumed=resume is not None, started=started, finished=rf.utc_now().isoformat(timespec="seconds"),
        )
        rf.write_json(run_dir / rf.METRICS, metrics)
        rf.write_status(run_dir, "completed", started=started)
    except BaseException as exc:  # KeyboardInterrupt too: the folder must never look finished
        interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
        rf.write_status(run_dir, "interrupted" if interrupted else "failed", started=started,
                        error=f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C means: stop now, no report
            _try_report(run_dir)
        if isinstance(exc, Interrupted):
            raise Interrupted(f"{exc}; continue with `mnist train --resume {run_dir}`") from None
        raise
    try:
        write_report(run_dir)
    except Exception as exc:  # the run itself is complete and saved; only the report is missing
        raise PipelineError(f"{run_dir}: the run completed but writing its report failed "
                            f"({type(exc).__name__}: {exc}); retry with `mnist report {run_dir}`") from exc
    return RunResult(run_dir, metrics)


def check_resumable(run_dir: str | Path) -> Path:
    """The run folder if it can be resumed: stopped (interrupted, failed, or killed while running) with a
    checkpoint. Otherwise a one-line error saying why not."""
    path = Path(run_dir)
    if not (path / rf.STATUS).is_file() or not (path / rf.CONFIG).is_file():
        raise ConfigError(f"--resume {path}: not a run folder (no status.json / config.yaml); "
                          f"pass a folder under <output dir>/runs/")
    status = rf.read_json(path / rf.STATUS)
    state = status.get("status")
    if state == "completed":
        raise ConfigError(f"--resume {path}: the run is already completed; start a new run instead")
    if state == "running" and runtime.process_alive(status.get("pid", -1)) and status.get("pid") != os.getpid():
        raise ConfigError(f"--resume {path}: the run is still running (pid {status['pid']}); stop it first")
    if rf.latest_checkpoint(path) is None:
        raise ConfigError(f"--resume {path}: no checkpoint (it stopped before its first epoch ended); "
                          f"start it again with mnist train --config {path / rf.CONFIG}")
    return path


def _try_report(run_dir: Path) -> None:
    """A partial report for a run that stopped early; its own failure must not hide the original error."""
    with contextlib.suppress(Exception):  # best effort only; `mnist report` can redo it
        write_report(run_dir)


def start_runtime(cfg: RunConfig) -> tuple[str, bool]:
    """Environment, device and seeds, before TensorFlow creates anything. Returns (device, deterministic)."""
    runtime.prepare_environment()
    device = runtime.select_device(cfg.training.device)
    runtime.set_precision(cfg.training.mixed_precision, device)
    deterministic = device.startswith("cpu")
    runtime.seed_everything(cfg.training.seed, deterministic=deterministic)
    return device, deterministic


def load_data(cfg: RunConfig):
    raw = load_raw(cfg.data.dataset, runtime.data_dir(cfg.data.data_dir))
    splits = prepare_splits(raw, validation_split=cfg.data.validation_split, subset=cfg.data.subset,
                            normalization=cfg.data.normalization, seed=cfg.training.seed)
    if splits.sizes["train"] < cfg.training.batch_size:
        raise ConfigError(f"training.batch_size = {cfg.training.batch_size} is larger than the "
                          f"{splits.sizes['train']} training examples; lower the batch size or raise data.subset")
    return raw, splits


def _build(cfg: RunConfig):
    """(model, trainer), created in one scope so that a tf.distribute strategy can wrap them."""
    import tensorflow as tf

    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.trainer import Trainer, make_optimizer

    training = cfg.training
    with tf.distribute.get_strategy().scope():
        model = build_model(cfg.model.name, **cfg.model.params)
        optimizer = make_optimizer(training.optimizer, training.learning_rate, training.momentum)
        trainer = Trainer(model, optimizer, global_batch_size=training.batch_size, jit_compile=training.jit_compile,
                          steps_per_execution=training.steps_per_execution,
                          label_smoothing=training.label_smoothing,
                          test_time_flip=cfg.data.augmentation.test_time_flip)
    return model, trainer


@dataclass
class TrainingSetup:
    """What one training run works with, wired from its config (TensorFlow objects, hence `Any`)."""

    model: Any
    trainer: Any
    augmentation: Any  # data.augment.Augmentation or None
    batches: Any  # data.datasets.TrainingBatches
    val_data: Any  # tf.data.Dataset
    schedule: Any
    early_stopping: Any  # None when off


def build_training(cfg: RunConfig, splits: Splits) -> TrainingSetup:
    """The model, trainer, training batches, validation data and epoch policies, as `mnist train` uses them
    (benchmarks/race.py too). Call after `start_runtime`."""
    from mnist_pipeline.data.augment import Augmentation
    from mnist_pipeline.data.datasets import TrainingBatches, evaluation_batches

    training = cfg.training
    model, trainer = _build(cfg)
    augmentation = Augmentation.from_config(cfg.data.augmentation, fill_value=splits.normalization.background)
    batches = TrainingBatches(splits.x_train, splits.y_train, training.batch_size, training.seed, augmentation,
                              jit_compile=training.jit_compile, gpu=runtime.using_gpu())
    val_data = evaluation_batches(splits.x_val, splits.y_val, training.batch_size)
    schedule, early_stopping = _policies(cfg)
    return TrainingSetup(model, trainer, augmentation, batches, val_data, schedule, early_stopping)


def _train_and_test(cfg: RunConfig, splits: Splits, run_dir: Path, events: Events, device: str,
                    resume: bool) -> dict[str, Any]:
    from mnist_pipeline.checkpoints import Checkpointer
    from mnist_pipeline.data.datasets import evaluation_batches
    from mnist_pipeline.models.blocks import describe_layers

    training = cfg.training
    setup = build_training(cfg, splits)
    model, trainer, batches, schedule, early_stopping = (setup.model, setup.trainer, setup.batches, setup.schedule,
                                                         setup.early_stopping)
    events.log(f"model: {cfg.model.name}, {model.count_params():,} parameters; device {device}; "
               f"{training.epochs} epochs of {batches.steps_per_epoch} steps")

    checkpointer = Checkpointer(run_dir, model, trainer.optimizer, schedule, early_stopping)
    state = None
    if resume:
        state = checkpointer.restore()
        events.log(f"resuming {run_dir.name} after epoch {state.next_epoch} of {training.epochs}")

    def on_epoch(record, state) -> None:
        checkpointer.save(state)
        rf.write_history(run_dir, [r.to_dict() for r in state.history])  # a crash keeps the epochs so far
        events.epoch(record, training.epochs)
        if state.stopped_early:
            events.log(f"early stopping: {early_stopping.monitor} did not improve for "
                       f"{early_stopping.patience} epochs")

    fit = trainer.fit(batches, setup.val_data, training.epochs, schedule=schedule,
                      early_stopping=early_stopping, state=state, on_step=events.step, on_epoch=on_epoch,
                      stop_requested=events.stop_requested)
    history = [r.to_dict() for r in fit.history]
    test_data = evaluation_batches(splits.x_test, splits.y_test, training.batch_size)
    test_loss, test_accuracy, probabilities = trainer.test(test_data, probabilities=True)
    try:
        model.save(run_dir / rf.MODEL)
    except OSError as exc:
        raise OutputError(f"{run_dir / rf.MODEL}: cannot save the model ({exc}); check free space") from None
    rf.write_json(run_dir / rf.MODEL_SUMMARY, {"layers": describe_layers(model, splits.x_train.shape[1:])})
    _write_report_data(run_dir, model, splits, probabilities, setup.augmentation, training.seed)
    best = history[fit.best_epoch - 1]
    confusion = confusion_matrix(splits.y_test, probabilities.argmax(axis=1), len(CLASS_NAMES[cfg.data.dataset]))
    return {
        "test_loss": test_loss, "test_accuracy": test_accuracy, "best_epoch": fit.best_epoch,
        "best_val_loss": best["val_loss"], "best_val_accuracy": best["val_accuracy"],
        "epochs": len(history), "stopped_early": fit.stopped_early, "parameters": int(model.count_params()),
        "train_seconds": round(sum(r["seconds"] for r in history), 2), "model": cfg.model.name,
        "traces": trainer.tracing_counts(),  # 1 each for the functions used: no retracing
        "per_class": per_class_table(confusion, CLASS_NAMES[cfg.data.dataset]),
        "confusion_matrix": confusion.tolist(),
    }


def _policies(cfg: RunConfig):
    """The learning-rate schedule and early stopping the config asks for (early stopping may be None)."""
    from mnist_pipeline.schedules import EarlyStopping, LearningRateSchedule

    t = cfg.training
    schedule = LearningRateSchedule(t.schedule.name, t.learning_rate, t.epochs, step_size=t.schedule.step_size,
                                    factor=t.schedule.factor, patience=t.schedule.patience,
                                    min_learning_rate=t.schedule.min_learning_rate,
                                    warmup_epochs=t.schedule.warmup_epochs)
    stopping = t.early_stopping
    early_stopping = (EarlyStopping(stopping.monitor, stopping.patience, stopping.min_delta)
                      if stopping.enabled else None)
    return schedule, early_stopping


SAMPLE_COUNT = 16  # the 4x4 samples grid
MISTAKE_COUNT = 25  # the 5x5 grid of most confident mistakes


def _write_report_data(run_dir: Path, model, splits: Splits, probabilities: np.ndarray, augmentation,
                       seed: int) -> None:
    """Save the numbers and images the report draws, so `mnist report` needs neither TensorFlow nor data."""
    def image_scale(x):  # (N, 28, 28, 1) normalized -> (N, 28, 28) in [0, 1]
        return np.clip(splits.normalization.invert(np.asarray(x)), 0.0, 1.0)[..., 0]

    chosen = np.random.default_rng(seed).choice(len(splits.y_train), SAMPLE_COUNT, replace=False)
    samples = splits.x_train[chosen]
    if augmentation is not None:
        samples = augmentation(samples, seed=np.array([seed, 0], np.int64))  # what the model was fed
    mistakes = most_confident_mistakes(splits.y_test, probabilities, MISTAKE_COUNT)
    first_kernel = next(layer.kernel for layer in model.stack if hasattr(layer, "kernel"))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, test_labels=splits.y_test, test_probabilities=probabilities.astype(np.float32),
        mistake_indices=mistakes, mistake_images=image_scale(splits.x_test[mistakes]),
        sample_images=image_scale(samples), sample_labels=splits.y_train[chosen],
        samples_augmented=augmentation is not None, first_layer_kernel=np.asarray(first_kernel),
    )
    rf.write_bytes(run_dir / rf.REPORT_DATA, buffer.getvalue())


def diagnose_gradients(cfg: RunConfig, steps: int) -> dict[str, Any]:
    """Train `steps` steps (no augmentation) and record the gradient norm of every layer's kernel per step.

    Returns {"layers": names from input to logits, "norms": [[norm per layer] per step], "mean": [per layer]}.
    """
    from mnist_pipeline.data.datasets import TrainingBatches

    start_runtime(cfg)
    _, splits = load_data(cfg)
    model, trainer = _build(cfg)
    kernels = [i for i, v in enumerate(model.trainable_variables) if v.path.endswith("kernel")]
    batches = TrainingBatches(splits.x_train, splits.y_train, cfg.training.batch_size, cfg.training.seed)
    norms: list[list[float]] = []
    epoch = 0
    while len(norms) < steps:
        for images, labels in batches.epoch(epoch):
            _, gradient_norms = trainer.train_step_with_gradient_norms(images, labels)
            norms.append([float(gradient_norms[i]) for i in kernels])
            if len(norms) == steps:
                break
        epoch += 1
    return {"layers": [model.trainable_variables[i].path.split("/")[-2] for i in kernels], "norms": norms,
            "mean": np.mean(norms, axis=0).tolist()}
