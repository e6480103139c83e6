"""`run(cfg)`: the one place that wires config -> runtime -> data -> model -> trainer -> run folder.

Imports TensorFlow, so the CLI imports this module only inside commands that train. Talks to the user only
through the `Events` callbacks it is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline import distribute, hardware, runtime
from mnist_pipeline.config import CLASS_NAMES, RunConfig, to_yaml
from mnist_pipeline.data.prepare import Splits, class_counts, prepare_splits
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import (
    ConfigError,
    Interrupted,
    OutputError,
    PipelineError,
    Pruned,
    StopNow,
    TrainingDiverged,
    WorkerLost,
    brief,
    plural,
)
from mnist_pipeline.reports import run_folder as rf
from mnist_pipeline.reports.document import write_report
from mnist_pipeline.reports.metrics import confusion_matrix, most_confident_mistakes, per_class_table, unsure_threshold
from mnist_pipeline.resume import (
    RUN_FORMAT,
    Resumable,
    check_init_from,
    check_same_data,
    initial_weights,
    made_by,
    sha256_text,
)


def _ignore(*_: Any) -> None:
    return None


@dataclass
class Events:
    """How a run reports progress; the CLI prints, tests can collect."""

    log: Callable[[str], None] = _ignore
    step: Callable[[Any], None] = _ignore  # a trainer.StepProgress after each group of steps
    epoch: Callable[[Any, int], None] = _ignore  # (EpochRecord, total epochs)
    stop_requested: Callable[[], bool] = lambda: False  # polled after every step (SIGINT / SIGTERM)
    warn: Callable[[str], None] | None = None  # what goes wrong without stopping the run; None: to `log`

    def __post_init__(self):
        if self.warn is None:
            self.warn = self.log


@dataclass(frozen=True)
class RunResult:
    run_dir: Path | None  # None on a worker that is not the chief: the chief writes the run folder
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    """Where a run trains, from `start_runtime`."""

    device: str
    strategy: Any  # tf.distribute.Strategy, or None for one device
    topology: distribute.Topology
    precision: hardware.Precision
    cpu: str  # the CPU and the flags a speed figure depends on (`hardware.CpuFacts.describe`)
    warning: str | None = None  # a slow choice the run goes ahead with (bfloat16 that this machine emulates)


def run(cfg: RunConfig, events: Events | None = None, resume: Resumable | None = None,
        test: bool = True, as_written: RunConfig | None = None) -> RunResult:
    """Train, validate and test the configured model; write the run folder; return its path and metrics.

    With `resume` (from `open_resumable`), continue that run folder from its last checkpoint (cfg is then its
    saved config). The data is read and checked before TensorFlow loads, so bad data costs no import and no
    folder. The folder says `completed` only once every file is written. Without `test` (a sweep's trial,
    chosen on validation only), the test split is never evaluated: metrics.json says `"tested": false` and
    holds no test numbers. `as_written`: the config the run came from as its file says (before --epochs or
    --set): metrics.json's `budget` compares the run's steps with what that config plans on the same data.
    """
    events = events or Events()
    wall_start = time.perf_counter()
    distribute.check_environment(cfg.training.distribute.strategy)
    init_from = check_init_from(cfg) if resume is None else None  # fine-tuning: the weights' run, before data
    raw, splits = load_data(cfg)
    data_fingerprint, source = fingerprint_data(raw), raw.source
    planned = as_written.planned_training(len(raw.y_train)) if as_written is not None else None
    del raw  # the splits hold what training needs: the full training images would outlive their use (47 MB)
    if resume is not None:
        check_same_data(resume, data_fingerprint, source)
    events.log(f"data: {cfg.data.dataset}, train {splits.sizes['train']}, val {splits.sizes['val']}, "
               f"test {splits.sizes['test']}, {cfg.data.normalization}; from {source}")
    # TensorFlow loads here; a missing GPU, a cluster that does not form or another topology than the resumed
    # run's is refused before any folder exists or changes.
    events.log("starting TensorFlow")  # its import and start-up take seconds: not a silent gap
    rt = start_runtime(cfg, kept_precision=resume.precision if resume else None)
    if resume is not None:
        rt.topology.check_same(resume.topology, resume.run_dir)
    events.log(f"precision: {rt.precision.policy} ({rt.precision.reason})")
    if rt.warning:
        events.warn(rt.warning)
    start_weights = initial_weights(cfg, init_from) if init_from else None  # refused before any folder exists
    if init_from and init_from["normalization"] != cfg.data.normalization:
        events.warn(f"model.init_from: those weights learned from inputs normalized by {init_from['normalization']}, "
                    f"and this run normalizes by {cfg.data.normalization}; its first epochs relearn the scale "
                    f"(set data.normalization: {init_from['normalization']} to start where that run ended)")
    if not rt.topology.chief:  # the same steps, checkpoints and tests as the chief, which alone writes files
        metrics = _train_and_test(cfg, splits, resume.run_dir if resume else None, events, rt, resume is not None,
                                  test=test, start_weights=start_weights)
        return RunResult(None, metrics)

    if resume is None:
        run_dir = rf.create_run_dir(cfg.output.dir, cfg.run_name)
        lock = rf.RunLock(run_dir)
        lock.acquire()  # a new folder: nobody else can hold it
        started = rf.utc_now().isoformat(timespec="seconds")
    else:
        run_dir, lock, started = resume.run_dir, resume.lock, resume.started
        rf.remove_temporaries(run_dir)  # what a killed write left behind
    try:
        rf.write_status(run_dir, "running", started=started, pid=os.getpid())
        if resume is None:
            config_text = to_yaml(_reproducible(cfg))
            rf.write_text(run_dir / rf.CONFIG, config_text)
            fingerprint = {"config_sha256": sha256_text(config_text), "data_sha256": data_fingerprint,
                           "data_source": source, "planned_training": planned, "format": RUN_FORMAT,
                           "made_by": made_by(),
                           "init_from": {key: init_from[key] for key in ("run", "model_sha256")} if init_from else None}
            rf.write_json(run_dir / rf.FINGERPRINT, fingerprint)
        else:
            fingerprint = resume.fingerprint
            planned = fingerprint.get("planned_training")
            if fingerprint.get("continued_from"):
                events.log(_continuation_note(cfg, fingerprint["continued_from"]))
        rf.write_json(run_dir / rf.NORMALIZATION, splits.normalization.to_dict())  # derived: same bytes on resume
        budget = {"epochs": cfg.training.epochs, "images": splits.sizes["train"],
                  "planned_epochs": planned[0] if planned else None, "planned_images": planned[1] if planned else None}
        # Where the run's weights came from, besides its own epochs: metrics.json and the report say it.
        origin = {key: fingerprint.get(key) for key in ("continued_from", "init_from")}
        metrics = _finish(cfg, splits, source, run_dir, events, rt, resume is not None, started, wall_start, test,
                          budget, origin, start_weights)
    finally:
        lock.release()
    return RunResult(run_dir, metrics)


def _finish(cfg, splits, source: str, run_dir: Path, events: Events, rt: Runtime, resumed: bool, started: str,
            wall_start: float, test: bool = True, budget: dict | None = None,
            origin: dict | None = None, start_weights: list | None = None) -> dict[str, Any]:
    """Train and test, then write metrics, model and report, and only then the status `completed`; on any
    failure or interruption mark the run as such and say what can be done with it."""
    summaries = None
    try:
        summaries = _open_summaries(cfg, run_dir, events.warn)
        if events.stop_requested():
            raise Interrupted("stopped before training started")
        metrics = _train_and_test(cfg, splits, run_dir, events, rt, resumed, summaries, test, start_weights)
        tool = made_by()  # this version, which finished the run (a resumed run may have started under another)
        metrics.update(
            wall_seconds=round(time.perf_counter() - wall_start, 2), device=rt.device, cpu=rt.cpu,
            deterministic=rt.device.startswith("cpu"),
            seed=cfg.training.seed, dataset=cfg.data.dataset, data_source=source, split_sizes=splits.sizes,
            train_class_counts=class_counts(splits.y_train), made_by=tool,
            versions={**runtime.library_versions(), "mnist_pipeline": tool["version"]}, **(origin or {}),
            mixed_precision=rt.precision.policy == "mixed_float16",
            precision=rt.precision.policy, precision_choice=rt.precision.to_dict(), budget=budget,
            resumed=resumed, started=started, finished=rf.utc_now().isoformat(timespec="seconds"),
        )
        rf.write_json(run_dir / rf.METRICS, metrics)
        write_report(run_dir, status="completed")
        if summaries:
            summaries.figures({"confusion_matrix": ("test", run_dir / rf.CONFUSION),
                               "most_confident_mistakes": ("test", run_dir / rf.MISCLASSIFIED),
                               "samples": ("train", run_dir / rf.SAMPLES)}, step=metrics["best_epoch"] - 1)
            summaries.close()
        rf.write_status(run_dir, "completed", started=started)
        return metrics
    except BaseException as exc:  # KeyboardInterrupt too: the folder must never look finished
        interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
        try:
            if summaries:
                with contextlib.suppress(Exception):  # the steps seen so far; never hides the original error
                    summaries.close()
            status = "pruned" if isinstance(exc, Pruned) else "interrupted" if interrupted else "failed"
            # A stop is the user's own doing, and our errors say what happened in words: their words alone
            # (the report shows them). A bare Ctrl-C has none; a foreign error is named by its kind.
            if interrupted:
                error = str(exc) or "stopped by Ctrl-C"
            else:
                error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {brief(exc, 1000)}"
            with contextlib.suppress(PipelineError):  # a full disk must not hide the original error
                rf.write_status(run_dir, status, started=started, error=error)
            if not isinstance(exc, KeyboardInterrupt):  # a second signal means: stop now, no report
                _try_report(run_dir)
        except StopNow as again:  # a second Ctrl-C while the first one's files are written: say the same
            exc = again
        raise _with_next_step(exc, run_dir) from None


def _continuation_note(cfg: RunConfig, continued: dict) -> str:
    """What training a run further does to its schedule, in one line: its rate jumps where a longer run's would
    be, not where the shorter run's ended."""
    schedule, _ = _policies(cfg)
    after = continued["after_epoch"]
    return (f"continued from {continued['run']} after epoch {after}: the {cfg.training.schedule.name} learning-rate "
            f"schedule is laid out over all {cfg.training.epochs} epochs (epoch {after + 1} starts at "
            f"{schedule.rate(after):.2g}, as in a run planned for {cfg.training.epochs}); early stopping's patience "
            f"starts again")


def _reproducible(cfg: RunConfig) -> RunConfig:
    """The config as config.yaml stores it: the data folder actually read, as an absolute path (whether it
    came typed relative, from the config or from $MNIST_DATA_DIR), so that `mnist train --config
    RUN/config.yaml` reads the same data from any directory."""
    used = runtime.data_dir(cfg.data.data_dir)
    if used is None:  # Keras's download: nothing to pin
        return cfg
    data = cfg.data.model_copy(update={"data_dir": os.path.abspath(used)})
    return cfg.model_copy(update={"data": data})


def _open_summaries(cfg: RunConfig, run_dir: Path, warn):
    """The run's TensorBoard writers, or None when the config turns them off."""
    board = cfg.output.tensorboard
    if not board.enabled:
        return None
    from mnist_pipeline.summaries import RunSummaries

    return RunSummaries(run_dir, board.loss_every_steps, board.histograms_every_epochs, warn)


def _with_next_step(exc: BaseException, run_dir: Path) -> BaseException:
    """The error, told what the user can do next: resume only if a checkpoint exists."""
    if not isinstance(exc, (Interrupted, OutputError, StopNow, WorkerLost)):
        return exc
    step = rf.next_step(run_dir)
    if isinstance(exc, WorkerLost) and rf.latest_checkpoint(run_dir) is not None:
        step += " on every worker"
    if isinstance(exc, StopNow):
        return StopNow(f"{exc}; {step}", exc.exit_code)
    return type(exc)(f"{exc}; {step}")


def fingerprint_data(raw) -> str:
    """The same digits give the same hash from any source."""
    return _sha256_arrays([raw.x_train, raw.y_train, raw.x_test, raw.y_test])


def _sha256_arrays(arrays) -> str:
    """SHA-256 over arrays, shapes and dtypes included."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _try_report(run_dir: Path) -> None:
    """A partial report for a run that stopped early; its own failure must not hide the original error."""
    with contextlib.suppress(Exception):  # best effort only; `mnist report` can redo it
        write_report(run_dir)


def start_runtime(cfg: RunConfig, distributed: bool = True, kept_precision: str | None = None) -> Runtime:
    """Environment, device, tf.distribute strategy (unless not `distributed`), precision and seeds, before
    TensorFlow creates anything. Runs on a CPU are made deterministic (op determinism). `kept_precision`: the
    policy a resumed run's checkpoint trained under, kept whatever this machine would choose."""
    runtime.prepare_environment()
    device = runtime.select_device(cfg.training.device)
    strategy, topology = (distribute.create_strategy(cfg.training.distribute, cfg.training.batch_size, device)
                          if distributed else (None, distribute.Topology("none", 1)))
    cpu = runtime.cpu()
    capability = runtime.gpu_capability() if device.startswith("gpu") else None
    requested = cfg.training.compute_precision
    precision = (hardware.Precision(kept_precision, requested, "kept from the checkpoint this run goes on from")
                 if kept_precision else hardware.resolve_precision(requested, device, cpu, capability,
                                                                   convolutional=cfg.model.name == "cnn"))
    if precision.policy == "mixed_bfloat16" and device.startswith("cpu") and cpu.bfloat16_aborts:
        fix = ("unset ONEDNN_MAX_CPU_ISA to resume this run (a resumed run keeps the precision it trained with)"
               if kept_precision else "unset ONEDNN_MAX_CPU_ISA, or set training.precision: auto or float32")
        raise ConfigError(f"training.precision = mixed_bfloat16 cannot train with {cpu.bfloat16_blocked_by}: oneDNN "
                          f"then aborts bfloat16 convolutions; {fix}")
    runtime.set_precision(precision.policy, device, "training.mixed_precision = true"
                          if cfg.training.mixed_precision else f"training.precision = {cfg.training.precision}")
    deterministic = device.startswith("cpu")
    if deterministic and cfg.training.jit_compile is True and cfg.model.name == "cnn" and strategy is None:
        # TensorFlow raises UnimplementedError at the first step otherwise: said before anything is built.
        # (Under a strategy the trainer leaves XLA off anyway.)
        raise ConfigError("training.jit_compile = true cannot train the cnn on a CPU: runs on a CPU are "
                          "deterministic, and XLA has no deterministic max-pooling gradient; set "
                          "training.jit_compile: false")
    runtime.seed_everything(cfg.training.seed, deterministic=deterministic)
    return Runtime(device, strategy, topology, precision, cpu.describe(),
                   hardware.bfloat16_warning(precision, device, cpu, capability))


def load_data(cfg: RunConfig):
    raw = load_raw(cfg.data.dataset, runtime.data_dir(cfg.data.data_dir))
    splits = prepare_splits(raw, validation_split=cfg.data.validation_split, subset=cfg.data.subset,
                            normalization=cfg.data.normalization, seed=cfg.training.seed)
    if splits.sizes["train"] < cfg.training.batch_size:
        more = " or raise data.subset" if cfg.data.subset else ""
        raise ConfigError(f"training.batch_size = {cfg.training.batch_size} is larger than the "
                          f"{splits.sizes['train']} training examples; lower the batch size{more}")
    return raw, splits


def _build(cfg: RunConfig, strategy=None, jit_compile: bool = False):
    """(model, trainer), created in the strategy's scope: their variables are then mirrored on its replicas.
    `jit_compile`: the resolved `training.jit_compile` (see `hardware.resolve_jit_compile`)."""
    import tensorflow as tf

    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.trainer import Trainer, make_optimizer

    training = cfg.training
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(cfg.model.name, **cfg.model.params)
        optimizer = make_optimizer(training.optimizer, training.learning_rate, training.momentum,
                                   training.weight_decay, training.ema)
        trainer = Trainer(model, optimizer, global_batch_size=training.batch_size,
                          jit_compile=jit_compile, steps_per_execution=training.steps_per_execution,
                          label_smoothing=training.label_smoothing,
                          test_time_flip=cfg.data.augmentation.test_time_flip, strategy=strategy)
    return model, trainer


@dataclass
class TrainingSetup:
    """What one training run works with, wired from its config (TensorFlow objects, hence `Any`)."""

    model: Any
    trainer: Any
    augmentation: Any  # data.augment.Augmentation or None
    batches: Any  # data.datasets.BatchSource
    val_data: Any  # tf.data.Dataset
    schedule: Any
    early_stopping: Any  # None when off
    statistics_data: Any  # tf.data.Dataset of training images for precise batch norm, or None
    jit_wanted: bool  # training.jit_compile, resolved; the trainer turns XLA off under a strategy
    jit_reason: str  # why it is on or off


def build_training(cfg: RunConfig, splits: Splits, strategy=None) -> TrainingSetup:
    """The model, trainer, training batches, validation data and epoch policies, as `mnist train` uses them
    (benchmarks/race.py too). Call after `start_runtime`, with its strategy."""
    from mnist_pipeline.data.augment import Augmentation
    from mnist_pipeline.data.datasets import evaluation_batches, statistics_batches, training_batches

    training = cfg.training
    steps = training.epochs * (splits.sizes["train"] // training.batch_size)
    jit_compile, jit_reason = hardware.resolve_jit_compile(training.jit_compile, cfg.model.name, cfg.model.params,
                                                           steps)
    model, trainer = _build(cfg, strategy, jit_compile)
    augmentation = Augmentation.from_config(cfg.data.augmentation, fill_value=splits.normalization.background)
    batches = training_batches(splits.x_train, splits.y_train, training.batch_size, training.seed, augmentation,
                               jit_compile=trainer.jit_compile, gpu=runtime.using_gpu(), strategy=strategy,
                               normalization=splits.normalization)
    val_data = evaluation_batches(splits.x_val, splits.y_val, training.batch_size, strategy, splits.normalization)
    schedule, early_stopping = _policies(cfg)
    statistics_data = statistics_batches(splits.x_train, training.batch_size, training.precise_batch_norm,
                                         training.seed, splits.normalization)
    return TrainingSetup(model, trainer, augmentation, batches, val_data, schedule, early_stopping, statistics_data,
                         jit_compile, jit_reason)


def _train_and_test(cfg: RunConfig, splits: Splits, run_dir: Path | None, events: Events, rt: Runtime,
                    resume: bool, summaries=None, test: bool = True, start_weights: list | None = None
                    ) -> dict[str, Any]:
    """Train and test; on the chief, also write history, checkpoints, model and report data to `run_dir`, and
    TensorBoard events to `summaries` (a `summaries.RunSummaries`, or None). Other workers of a cluster take
    part in every step, checkpoint and test, write nothing, and read `run_dir` only to resume (None on a
    fresh run)."""
    from mnist_pipeline.checkpoints import Checkpointer
    from mnist_pipeline.data.datasets import evaluation_batches
    from mnist_pipeline.models.blocks import describe_layers

    training, topology, chief = cfg.training, rt.topology, rt.topology.chief
    setup = build_training(cfg, splits, rt.strategy)
    model, trainer, batches, schedule, early_stopping = (setup.model, setup.trainer, setup.batches, setup.schedule,
                                                         setup.early_stopping)
    events.log(f"model: {cfg.model.name}, {model.count_params():,} parameters; {topology.describe(rt.device)}; "
               f"{plural(training.epochs, 'epoch')} of {plural(batches.steps_per_epoch, 'step')}")
    if trainer.jit_compile:  # said before the first steps, which wait for the compile
        events.log(f"XLA: on ({setup.jit_reason}); compiling first")
    elif setup.jit_wanted:
        events.log("XLA: off under a tf.distribute strategy (its all-reduces and per-replica batches run "
                   "outside XLA; Keras's fit() does the same)")
    else:
        events.log(f"XLA: off ({setup.jit_reason})")

    if start_weights is not None:  # fine-tuning; a resumed run's weights come from its checkpoint instead
        model.set_weights(start_weights)
        events.log(f"starting from the weights of {cfg.model.init_from}")
    checkpointer = Checkpointer(run_dir, model, trainer.optimizer, schedule, early_stopping, topology.to_dict(),
                                writes_folder=chief, precision=rt.precision.policy)
    state = None
    if resume:
        state = checkpointer.restore()
        events.log(f"going on from the checkpoint after epoch {state.next_epoch} (of {training.epochs})")

    def on_epoch(record, state) -> None:
        checkpointer.save(state)  # on every worker: tf.distribute may need each of them to save
        if chief:
            rf.write_history(run_dir, [r.to_dict() for r in state.history])  # a crash keeps the epochs so far
        if summaries:
            summaries.epoch(record, model)
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
        fit = trainer.fit(batches, setup.val_data, training.epochs, schedule=schedule,
                          early_stopping=early_stopping, state=state, on_step=on_step, on_epoch=on_epoch,
                          on_losses=summaries.step_losses if summaries else None,
                          stop_requested=events.stop_requested, statistics_data=setup.statistics_data)
        # fit stops after the last epoch too, when asked (the run is then resumable with every epoch done, and
        # `--resume` only tests and writes the files); once those are being written, finishing is quicker
        # than stopping (the CLI says so).
        if test:
            events.log("testing, then writing the model and the report")
            test_data = evaluation_batches(splits.x_test, splits.y_test, training.batch_size, rt.strategy,
                                           splits.normalization)
            test_loss, test_accuracy, probabilities = trainer.test(test_data, probabilities=True)
            # predict flags answers below the confidence at which this model's validation answers were
            # right less than 90% of the time: chosen on validation, so the test split stays untouched.
            unsure_below = unsure_threshold(trainer.test(setup.val_data, probabilities=True)[2], splits.y_val)
            if events.stop_requested():
                raise Interrupted("stopped during the test, after the last epoch")
    if summaries and test:
        summaries.test(test_loss, test_accuracy, fit.best_epoch)
    history = [r.to_dict() for r in fit.history]
    if chief:
        _save_model(model, run_dir / rf.MODEL)
        rf.write_json(run_dir / rf.MODEL_SUMMARY, {"layers": describe_layers(model, (*splits.x_train.shape[1:], 1))})
        if test:
            _write_report_data(run_dir, model, splits, probabilities, setup.augmentation, training.seed)
    best = history[fit.best_epoch - 1]
    metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy, "unsure_below": unsure_below} if test else {}
    metrics.update({
        "tested": test, "best_epoch": fit.best_epoch,
        "best_val_loss": best["val_loss"], "best_val_accuracy": best["val_accuracy"],
        "epochs": len(history), "stopped_early": fit.stopped_early, "parameters": int(model.count_params()),
        "train_seconds": round(sum(r["seconds"] for r in history), 2), "model": cfg.model.name,
        "traces": trainer.tracing_counts(),  # 1 each for the functions used: no retracing
        "batches": batches.placement, "jit_compile": trainer.jit_compile, "jit_compile_reason": setup.jit_reason,
        "replicas": topology.replicas, "distribute": topology.to_dict(),
        "weights_sha256": _sha256_arrays(model.get_weights()),  # the same on every worker of a cluster
        "first_step_at": first_step_at[0] if first_step_at else None,  # Unix time; None when resumed done
    })
    if test:
        names = CLASS_NAMES[cfg.data.dataset]
        confusion = confusion_matrix(splits.y_test, probabilities.argmax(axis=1), len(names))
        metrics.update(per_class=per_class_table(confusion, names), confusion_matrix=confusion.tolist())
    return metrics


def _save_model(model, path: Path) -> None:
    """model.keras, written under a temporary name and renamed: a failed save never leaves half a model."""
    rf.write_atomically(path, model.save, suffix=".keras", action="save the model")  # Keras wants the suffix


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

    # The samples are drawn as augmented (so normalized first, then inverted); the mistakes as stored.
    chosen = np.random.default_rng(seed).choice(len(splits.y_train), SAMPLE_COUNT, replace=False)
    samples = splits.inputs(splits.x_train[chosen])
    if augmentation is not None:
        samples = augmentation(samples, seed=np.array([seed, 0], np.int64))  # what the model was fed
    mistakes = most_confident_mistakes(splits.y_test, probabilities, MISTAKE_COUNT)
    first_kernel = next(layer.kernel for layer in model.stack if hasattr(layer, "kernel"))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, test_labels=splits.y_test, test_probabilities=probabilities.astype(np.float32),
        mistake_indices=mistakes, mistake_images=splits.x_test[mistakes] / np.float32(255),
        sample_images=image_scale(samples), sample_labels=splits.y_train[chosen],
        samples_augmented=augmentation is not None, first_layer_kernel=np.asarray(first_kernel),
    )
    rf.write_bytes(run_dir / rf.REPORT_DATA, buffer.getvalue())


def diagnose_gradients(cfg: RunConfig, steps: int) -> dict[str, Any]:
    """Train `steps` steps (no augmentation) and record the gradient norm of every layer's kernel per step.

    Returns {"layers": names from input to logits, "norms": [[norm per layer] per step], "mean": [per layer],
    "diverged_at_step": the first step whose gradients were NaN or infinite (not recorded, and the last one
    tried), or None}. Exploding gradients are a finding too, so only all steps failing is an error.
    """
    from mnist_pipeline.data.datasets import PipelinedBatches

    start_runtime(cfg, distributed=False)  # per-step gradient norms of one model: one device
    _, splits = load_data(cfg)
    model, trainer = _build(cfg)
    kernels = [i for i, v in enumerate(model.trainable_variables) if v.path.endswith("kernel")]
    batches = PipelinedBatches(splits.x_train, splits.y_train, cfg.training.batch_size, cfg.training.seed,
                               normalization=splits.normalization)
    norms: list[list[float]] = []
    diverged_at = None
    epoch = 0
    while len(norms) < steps and diverged_at is None:
        for images, labels in batches.epoch(epoch):
            _, gradient_norms = trainer.learning_step_with_gradient_norms(images, labels)
            step_norms = [float(gradient_norms[i]) for i in kernels]
            if not np.all(np.isfinite(step_norms)):
                diverged_at = len(norms) + 1
                break
            norms.append(step_norms)
            if len(norms) == steps:
                break
        epoch += 1
    if not norms:
        raise TrainingDiverged(f"the gradients were NaN or infinite from the first step; lower "
                               f"training.learning_rate (now {cfg.training.learning_rate:g}) or check the data")
    return {"layers": [model.trainable_variables[i].path.split("/")[-2] for i in kernels], "norms": norms,
            "mean": np.mean(norms, axis=0).tolist(), "diverged_at_step": diverged_at}
