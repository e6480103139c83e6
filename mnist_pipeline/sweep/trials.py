"""A sweep's trials: each trial's values from the study, its runs (one per seed) as run folders, the epoch
callbacks that print and prune, and the worker loop that pulls trials until the sweep has its total."""

from __future__ import annotations

import os
import socket
import statistics
from typing import Any

from mnist_pipeline.config import load_config
from mnist_pipeline.config.space import Choice, FloatRange, override
from mnist_pipeline.errors import PipelineError, Pruned, brief
from mnist_pipeline.sweep.labels import short_labels, values_text
from mnist_pipeline.sweep.optuna_study import config_value, counted_trials, requeue, stored_choices
from mnist_pipeline.sweep.setup import Sweep


def suggest(trial, key: str, distribution) -> Any:
    """The trial's value for one config key (the key is the Optuna parameter name)."""
    if isinstance(distribution, Choice):
        return config_value(distribution, trial.suggest_categorical(key, stored_choices(list(distribution.choices))))
    if isinstance(distribution, FloatRange):
        return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                                   log=distribution.log)
    return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def trial_values(sweep: Sweep, trial) -> dict[str, Any]:
    """The trial's value for every key of the space (Optuna gives the same again if asked twice)."""
    return {key: suggest(trial, key, d) for key, d in sweep.space.params.items()}


def run_trial(sweep: Sweep, trial, events_factory) -> float:
    """Train the trial's config once per seed (the first seed's epochs go to the pruner); return the mean of the
    objective over the seeds, and keep each seed's value, their standard deviation and run folders on the trial.
    `events_factory(trial, seed, first)` gives each seed's run its Events. Raises Pruned, or the run's error (the
    trial then fails)."""
    from mnist_pipeline.pipeline import run

    values = trial_values(sweep, trial)
    seeds = sweep.seeds or (None,)
    results, runs = [], []
    for index, seed in enumerate(seeds):
        name = f"trial-{trial.number:04d}" + (f"-seed{seed}" if seed is not None and len(seeds) > 1 else "")
        extra = [override(key, value) for key, value in values.items()]
        if seed is not None:
            extra.append(f"training.seed={seed}")
        cfg = load_config(sweep.base, extra, {"output.dir": str(sweep.folder), "output.name": name})
        result = run(cfg, events_factory(trial, seed if len(seeds) > 1 else None, index == 0), test=False)
        results.append(float(result.metrics[sweep.objective_key]))
        runs.append(result.run_dir.name)
        trial.set_user_attr("runs", runs)
        trial.set_user_attr("values", results)
    if len(results) > 1:
        trial.set_user_attr("std", statistics.stdev(results))
    return statistics.fmean(results)


def epoch_printer(log, number: int, seed: int | None):
    """An `Events.epoch` callback: one plain line per finished epoch of a trial (a log, not a redrawn bar; the
    trial number on each line, since --workers interleave theirs)."""
    def on_epoch(record, epochs: int) -> None:
        log(f"trial {number}{f' seed {seed}' if seed is not None else ''}  epoch {record.epoch}/{epochs}  "
            f"loss {record.loss:.4f}  val_loss {record.val_loss:.4f}  val_accuracy {record.val_accuracy:.4f}  "
            f"{record.seconds:.1f}s")
    return on_epoch


def pruning_reporter(trial, objective: str):
    """An `Events.epoch` callback: each epoch's validation value to the trial; Pruned when the pruner says so."""
    def on_epoch(record, epochs: int) -> None:
        trial.report(getattr(record, objective), record.epoch - 1)
        if record.epoch < epochs and trial.should_prune():  # after the last epoch there is nothing left to save
            raise Pruned(f"pruned after epoch {record.epoch}: {objective} {getattr(record, objective):.4f} is "
                         f"behind the earlier trials at that epoch")
    return on_epoch


class _TrialFailed(Exception):
    """A trial's run failed (its message is on the trial): recorded, and the sweep goes on."""


class _OverTotal(Exception):
    """Another worker took the sweep's last trial at the same moment: this one steps back, unrun."""


def work(sweep: Sweep, study, quota: int | None, log, stop_requested) -> int:
    """Pull trials from the study and run them until the sweep has its trials (or this worker its `quota`);
    return how many this worker ran. A pruned or failed trial is recorded and the next one starts; a stop
    (SIGINT / SIGTERM) re-queues the trial it interrupted and ends the loop by raising. Each trial goes through
    Optuna's own `study.optimize`, which also keeps a database storage's heartbeat for it."""
    import optuna
    from optuna.trial import TrialState

    from mnist_pipeline.errors import Interrupted
    from mnist_pipeline.pipeline import Events

    def events(trial, seed: int | None, first: bool) -> Events:
        printer = epoch_printer(log, trial.number, seed)
        reporter = pruning_reporter(trial, sweep.space.objective) if first else Events().epoch

        def on_epoch(record, epochs: int) -> None:
            printer(record, epochs)  # before the pruner: the epoch it stops after is on screen
            reporter(record, epochs)
        return Events(epoch=on_epoch, stop_requested=stop_requested)

    def objective(trial) -> float:
        started.append(trial)
        position = counted_trials(study, up_to=trial.number)
        if position > sweep.trials:
            # Trial numbers are given out in order: exactly the ones past the total step back, unrun, uncounted.
            trial.set_user_attr("skipped", "over the sweep's total: another worker took the last trial")
            raise _OverTotal
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # a re-run finds dead ones
        again = trial.user_attrs.get("replaces")
        log(f"trial {trial.number} ({position} of {sweep.trials}"
            f"{f', again the values of trial {again}' if again is not None else ''}): "
            f"{values_text(trial_values(sweep, trial), labels)}")
        try:
            return run_trial(sweep, trial, events)
        except Pruned as exc:
            trial.set_user_attr("outcome", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except (Interrupted, KeyboardInterrupt):
            trial.set_user_attr("outcome", "stopped by Ctrl-C or SIGTERM")
            raise
        except Exception as exc:  # a NaN, a combination the config refuses, a full disk: this trial only
            message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {brief(exc)}"
            trial.set_user_attr("outcome", f"failed: {message}")
            raise _TrialFailed(message) from None

    labels = short_labels(sweep.space.params)
    ran, started = 0, []
    while (quota is None or ran < quota) and counted_trials(study) < sweep.trials:
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialFailed, _OverTotal))
        except (Interrupted, KeyboardInterrupt):
            trial = study.get_trials(deepcopy=False)[started[-1].number]
            if trial.state == TrialState.RUNNING:
                study.tell(trial.number, state=TrialState.FAIL)
            requeue(study, trial)
            raise
        trial = study.get_trials(deepcopy=False)[started[-1].number]
        if "skipped" in trial.user_attrs:
            break
        ran += 1
        log(_outcome_line(sweep, trial))
    return ran


def _outcome_line(sweep: Sweep, trial) -> str:
    if trial.value is None or trial.state.name != "COMPLETE":
        return f"trial {trial.number}: {trial.user_attrs.get('outcome', trial.state.name.lower())}"
    std = trial.user_attrs.get("std")
    spread = f" (sd {std:.4f} over {len(sweep.seeds)} seeds)" if std is not None else ""
    return (f"trial {trial.number}: {sweep.space.objective} {trial.value:.4f}{spread}  "
            f"{values_text(trial.params, short_labels(sweep.space.params))}")
