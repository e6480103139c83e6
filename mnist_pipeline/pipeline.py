"""`run(cfg)`: the one place that wires config -> runtime -> data -> model -> trainer -> run folder.

Imports TensorFlow (through `startup`), so the CLI imports this module only inside commands that train.
Talks to the user only through the `Events` callbacks it is given. The stages live in modules named after
them: `startup` (device, precision, seeds), `training_setup` (data, model, trainer), `training_run` (fit, test,
the training's files), `fingerprints`, `run_metrics`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mnist_pipeline import distribute, runtime
from mnist_pipeline.config import RunConfig, to_yaml
from mnist_pipeline.data.prepare import class_counts
from mnist_pipeline.errors import Interrupted, OutputError, PipelineError, Pruned, StopNow, WorkerLost, brief
from mnist_pipeline.fingerprints import fingerprint_data, reproducible, run_fingerprint
from mnist_pipeline.reports import run_folder
from mnist_pipeline.reports.document import write_report
from mnist_pipeline.resume import Resumable, check_init_from, check_same_data, initial_weights, made_by
from mnist_pipeline.run_metrics import RunFacts
from mnist_pipeline.startup import Runtime, start_runtime
from mnist_pipeline.training_run import RunContext, train_and_test
from mnist_pipeline.training_setup import epoch_policies, load_data


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
    started_runtime = _start_runtime(cfg, events, resume)
    start_weights = _start_weights(cfg, init_from, events)  # refused before any folder exists
    ctx = RunContext(cfg, splits, source, started_runtime, events, resume.run_dir if resume else None,
                     resumed=resume is not None, test=test, start_weights=start_weights, wall_start=wall_start)
    if not ctx.chief:  # the same steps, checkpoints and tests as the chief, which alone writes files
        return RunResult(None, train_and_test(ctx).to_dict())

    run_dir, lock, started = _open_run_folder(cfg, resume)
    try:
        run_folder.write_status(run_dir, "running", started=started, pid=os.getpid())
        fingerprint = (_write_inputs(cfg, run_dir, data_fingerprint, source, planned, init_from) if resume is None
                       else resume.fingerprint)
        if resume is not None and fingerprint.get("continued_from"):
            events.log(_continuation_note(cfg, fingerprint["continued_from"]))
        # derived from the training split: the same bytes on resume
        run_folder.write_json(run_dir / run_folder.NORMALIZATION, splits.normalization.to_dict())
        # `origin`: where the run's weights came from, besides its own epochs (metrics.json and the report say it)
        ctx = replace(ctx, run_dir=run_dir, started=started,
                      budget=_budget(cfg, splits.sizes["train"], fingerprint.get("planned_training")),
                      origin={key: fingerprint.get(key) for key in ("continued_from", "init_from")})
        metrics = _train_and_complete(ctx)
    finally:
        lock.release()
    return RunResult(run_dir, metrics)


def _open_run_folder(cfg: RunConfig, resume: Resumable | None) -> tuple[Path, run_folder.RunLock, str]:
    """(the run folder, its lock, held, and when the run started): a new folder, or the resumed one cleared of
    what a killed write left behind."""
    if resume is not None:
        run_folder.remove_temporaries(resume.run_dir)
        return resume.run_dir, resume.lock, resume.started
    run_dir = run_folder.create_run_dir(cfg.output.dir, cfg.run_name)
    lock = run_folder.RunLock(run_dir)
    lock.acquire()  # a new folder: nobody else can hold it
    return run_dir, lock, run_folder.utc_now().isoformat(timespec="seconds")


def _write_inputs(cfg: RunConfig, run_dir: Path, data_sha256: str, source: str, planned: tuple | None,
                  init_from: dict | None) -> dict[str, Any]:
    """A new run's config.yaml and fingerprint.json; returns the fingerprint."""
    config_text = to_yaml(reproducible(cfg))
    run_folder.write_text(run_dir / run_folder.CONFIG, config_text)
    fingerprint = run_fingerprint(config_text, data_sha256, source, planned, init_from)
    run_folder.write_json(run_dir / run_folder.FINGERPRINT, fingerprint)
    return fingerprint


def _budget(cfg: RunConfig, images: int, planned) -> dict[str, Any]:
    """metrics.json's budget: this run's epochs and training images, and what its config file planned
    (`RunConfig.planned_training`; None when unknown)."""
    return {"epochs": cfg.training.epochs, "images": images,
            "planned_epochs": planned[0] if planned else None, "planned_images": planned[1] if planned else None}


def _start_runtime(cfg: RunConfig, events: Events, resume: Resumable | None) -> Runtime:
    """`startup.start_runtime`, a resumed run keeping its precision and topology; says the precision."""
    started = start_runtime(cfg, kept_precision=resume.precision if resume else None)
    if resume is not None:
        started.topology.check_same(resume.topology, resume.run_dir)
    events.log(f"precision: {started.precision.policy} ({started.precision.reason})")
    if started.warning:
        events.warn(started.warning)
    return started


def _start_weights(cfg: RunConfig, init_from: dict | None, events: Events) -> list | None:
    """The weights a fine-tuning run starts from (None for a fresh or resumed run)."""
    if not init_from:
        return None
    weights = initial_weights(cfg, init_from)
    if init_from["normalization"] != cfg.data.normalization:
        events.warn(f"model.init_from: those weights learned from inputs normalized by {init_from['normalization']}, "
                    f"and this run normalizes by {cfg.data.normalization}; its first epochs relearn the scale "
                    f"(set data.normalization: {init_from['normalization']} to start where that run ended)")
    return weights


def _train_and_complete(ctx: RunContext) -> dict[str, Any]:
    """Train and test, then write metrics, model and report, and only then the status `completed`; on any
    failure or interruption mark the run as such and say what can be done with it."""
    cfg, run_dir, events, started = ctx.cfg, ctx.run_dir, ctx.events, ctx.started
    board = None
    try:
        board = _open_tensorboard(cfg, run_dir, events.warn)
        if events.stop_requested():
            raise Interrupted("stopped before training started")
        metrics = train_and_test(ctx, board).with_facts(_run_facts(ctx)).to_dict()
        run_folder.write_json(run_dir / run_folder.METRICS, metrics)
        write_report(run_dir, status="completed")
        if board:
            board.figures({"confusion_matrix": ("test", run_dir / run_folder.CONFUSION),
                               "most_confident_mistakes": ("test", run_dir / run_folder.MISCLASSIFIED),
                               "samples": ("train", run_dir / run_folder.SAMPLES)}, step=metrics["best_epoch"] - 1)
            board.close()
        run_folder.write_status(run_dir, "completed", started=started)
        return metrics
    except BaseException as exc:  # KeyboardInterrupt too: the folder must never look finished
        raise _mark_stopped(exc, run_dir, started, board) from None


def _run_facts(ctx: RunContext) -> RunFacts:
    """metrics.json's facts about the run as a whole, once it has trained and tested."""
    cfg, started, splits = ctx.cfg, ctx.runtime, ctx.splits
    tool = made_by()  # this version, which finished the run (a resumed run may have started under another)
    origin = ctx.origin or {}
    return RunFacts(
        wall_seconds=round(time.perf_counter() - ctx.wall_start, 2), device=started.device.describe(), cpu=started.cpu,
        deterministic=not started.device.is_gpu, seed=cfg.training.seed, dataset=cfg.data.dataset,
        data_source=ctx.source, split_sizes=splits.sizes, train_class_counts=class_counts(splits.y_train),
        made_by=tool, versions={**runtime.library_versions(), "mnist_pipeline": tool["version"]},
        continued_from=origin.get("continued_from"), init_from=origin.get("init_from"),
        mixed_precision=started.precision.policy == "mixed_float16", precision=started.precision.policy,
        precision_choice=started.precision.to_dict(), budget=ctx.budget, resumed=ctx.resumed, started=ctx.started,
        finished=run_folder.utc_now().isoformat(timespec="seconds"))


def _mark_stopped(exc: BaseException, run_dir: Path, started: str, board) -> BaseException:
    """Mark the run pruned, interrupted or failed (and write a partial report); return the error to raise."""
    interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
    try:
        if board:
            with contextlib.suppress(Exception):  # the steps seen so far; never hides the original error
                board.close()
        status = "pruned" if isinstance(exc, Pruned) else "interrupted" if interrupted else "failed"
        # A stop is the user's own doing, and our errors say what happened in words: their words alone
        # (the report shows them). A bare Ctrl-C has none; a foreign error is named by its kind.
        if interrupted:
            error = str(exc) or "stopped by Ctrl-C"
        else:
            error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {brief(exc, 1000)}"
        with contextlib.suppress(PipelineError):  # a full disk must not hide the original error
            run_folder.write_status(run_dir, status, started=started, error=error)
        if not isinstance(exc, KeyboardInterrupt):  # a second signal means: stop now, no report
            _try_report(run_dir)
    except StopNow as again:  # a second Ctrl-C while the first one's files are written: say the same
        exc = again
    return _with_next_step(exc, run_dir)


def _continuation_note(cfg: RunConfig, continued: dict) -> str:
    """What training a run further does to its schedule, in one line: its rate jumps where a longer run's would
    be, not where the shorter run's ended."""
    schedule, _ = epoch_policies(cfg)
    after = continued["after_epoch"]
    return (f"continued from {continued['run']} after epoch {after}: the {cfg.training.schedule.name} learning-rate "
            f"schedule is laid out over all {cfg.training.epochs} epochs (epoch {after + 1} starts at "
            f"{schedule.rate(after):.2g}, as in a run planned for {cfg.training.epochs}); early stopping's patience "
            f"starts again")


def _open_tensorboard(cfg: RunConfig, run_dir: Path, warn):
    """The run's TensorBoard writers, or None when the config turns them off."""
    wanted = cfg.output.tensorboard
    if not wanted.enabled:
        return None
    from mnist_pipeline.tensorboard_events import TensorBoardEvents

    return TensorBoardEvents(run_dir, wanted.loss_every_steps, wanted.histograms_every_epochs, warn)


def _with_next_step(exc: BaseException, run_dir: Path) -> BaseException:
    """The error, told what the user can do next: resume only if a checkpoint exists."""
    if not isinstance(exc, (Interrupted, OutputError, StopNow, WorkerLost)):
        return exc
    step = run_folder.next_step(run_dir)
    if isinstance(exc, WorkerLost) and run_folder.latest_checkpoint(run_dir) is not None:
        step += " on every worker"
    if isinstance(exc, StopNow):
        return StopNow(f"{exc}; {step}", exc.exit_code)
    return type(exc)(f"{exc}; {step}")


def _try_report(run_dir: Path) -> None:
    """A partial report for a run that stopped early; its own failure must not hide the original error."""
    with contextlib.suppress(Exception):  # best effort only; `mnist report` can redo it
        write_report(run_dir)
