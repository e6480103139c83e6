"""The sweep's Optuna study and its trials: storage, sampler, pruner, one trial as run folders, the worker loop,
and the bookkeeping that keeps the trial count exact when processes die or race."""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import warnings
from typing import Any

from mnist_pipeline.config import load_config
from mnist_pipeline.config.space import Choice, FloatRange, SweepSpace, grid, override
from mnist_pipeline.errors import PipelineError, Pruned, brief
from mnist_pipeline.sweep.labels import short_labels, values_text
from mnist_pipeline.sweep.setup import JOURNAL, Sweep, masked


def open_study(sweep: Sweep, sampler_seed: int | None = None, create: bool = True):
    """The sweep's Optuna study, created or loaded (a re-run continues it). Without `create` (a report), only
    loaded: a sweep whose study is gone is an error, never a new empty study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our one line per trial, not Optuna's INFO and WARNING
    if sweep.storage:
        # A database shared by machines: each running trial beats every 30 s; a trial silent for 2 minutes (its
        # machine died) is failed by the next worker that starts a trial, and re-queued once.
        storage = _database(sweep.storage)
    else:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        journal = sweep.folder / JOURNAL
        check_journal(journal, sweep, must_exist=not create)
        try:
            sweep.folder.mkdir(parents=True, exist_ok=True)
            storage = JournalStorage(JournalFileBackend(str(journal)))
        except OSError as exc:
            raise PipelineError(f"{journal}: cannot open the study's journal ({brief(exc)}); check the folder's "
                                f"permissions and free space") from None
        except Exception as exc:  # lines that are JSON but not Optuna's operations (a KeyError on replay)
            raise _journal_damaged(journal, f"its operations do not replay ({type(exc).__name__}: "
                                            f"{brief(exc)})") from None
    try:
        if not create:
            return optuna.load_study(study_name=sweep.name, storage=storage,
                                     sampler=sampler_for(sweep.space, sampler_seed), pruner=_pruner(sweep.prune))
        return optuna.create_study(study_name=sweep.name, storage=storage, load_if_exists=True,
                                   direction=sweep.space.direction, sampler=sampler_for(sweep.space, sampler_seed),
                                   pruner=_pruner(sweep.prune))
    except KeyError:
        where = f"--storage {masked(sweep.storage)}" if sweep.storage else str(sweep.folder / JOURNAL)
        raise PipelineError(f"{where} holds no study {sweep.name!r}; run the sweep (`mnist sweep ... --name "
                            f"{sweep.name}`) before its report") from None
    except ValueError as exc:  # e.g. a study of the other direction under this name
        raise PipelineError(f"study {sweep.name!r}: {brief(exc)}; pick another --name") from None


def check_journal(path, sweep: Sweep, must_exist: bool) -> None:
    """The journal is whole: every line a JSON object of Optuna's operations, ending in a newline. Optuna skips
    a cut last line when it reads, but appends the next operation to it, which breaks the journal for good."""
    if not path.exists():
        runs = sweep.folder / "runs"
        if must_exist or (runs.is_dir() and any(runs.iterdir())):
            raise _journal_damaged(path, "missing (the sweep's run folders are there, its study is not)"
                                   if not must_exist or runs.is_dir() else "missing: the sweep has no study")
        return
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    raise _journal_damaged(path, f"line {number} is cut short (a write was interrupted)",
                                           "remove that last line (sed -i '$ d' FILE) to continue from the trials "
                                           "before it")
                try:
                    entry = json.loads(line)
                except (ValueError, RecursionError):
                    entry = None
                if not (isinstance(entry, dict) and isinstance(entry.get("op_code"), int)
                        and isinstance(entry.get("worker_id"), str)):
                    raise _journal_damaged(path, f"line {number} is not one of Optuna's journal operations")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the study's journal ({brief(exc)})") from None


def _journal_damaged(path, problem: str, fix: str = "restore it from a backup") -> PipelineError:
    """The error for a study journal that Optuna would misread, naming it and what to do (exit 1)."""
    return PipelineError(f"{path}: {problem}; the study cannot be read: {fix}, or start the sweep again under "
                         f"another --name")


def claim_sampler_seed(study, base: int) -> int:
    """This process's sampler seed: `base` for the first live process of the study (a single-process sweep stays
    reproducible), base + k for the k-th one running beside it, so two processes never sample the same values.
    Each process adds its own study attribute (no two write the same key, so none is lost) and counts the
    live ones written before it."""
    me = f"sampler:{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    study.set_user_attr(me, base)
    rank = 0
    for key in study.user_attrs:
        if key == me:
            break
        if key.startswith("sampler:"):
            host, _, pid = key.removeprefix("sampler:").rsplit(":", 1)[0].rpartition(":")
            rank += host != socket.gethostname() or not pid.isdigit() or _alive(int(pid))
    return base + rank


def failure_summary(study) -> str | None:
    """When every counted trial of the study failed: `all N trials failed; the first: <reason>`."""
    trials = _counted(study.get_trials(deepcopy=False))
    if not trials or any(t.state.name != "FAIL" for t in trials):
        return None
    first = min(trials, key=lambda t: t.number)
    reason = str(first.user_attrs.get("outcome", "its process died")).removeprefix("failed: ")
    return f"all {len(trials)} trials failed; the first (trial {first.number}): {brief(reason)}"


def _database(url: str):
    """Optuna's RDBStorage on `url`. Machines that start together race to create its tables, and all but one
    get a duplicate-key error from the database: the next attempt finds the tables made."""
    import optuna

    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the heartbeat callback is marked experimental
                return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120,
                                                  heartbeat_stale_trial_callback=requeue)
        except Exception as exc:
            if attempt == 3 or "ModuleNotFoundError" in type(exc).__name__ or isinstance(exc, ImportError):
                raise PipelineError(f"--storage {masked(url)}: cannot open the study there ({type(exc).__name__}: "
                                    f"{brief(exc)}); check the URL, the server and the database driver (e.g. "
                                    f"pip install psycopg2-binary for postgresql://)") from None
            time.sleep(0.5 + attempt)


def sampler_for(space: SweepSpace, seed: int | None):
    import optuna

    if space.sampler == "grid":
        return optuna.samplers.GridSampler({key: _stored(values) for key, values in grid(space).items()}, seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(prune: bool):
    import optuna

    if not prune:
        return optuna.pruners.NopPruner()
    # Median rule: a trial whose best-so-far value at an epoch is worse than the median of earlier trials at that
    # epoch stops; never before 3 trials have finished, nor in the first epoch.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def suggest(trial, key: str, distribution) -> Any:
    """The trial's value for one config key (the key is the Optuna parameter name)."""
    if isinstance(distribution, Choice):
        return config_value(distribution, trial.suggest_categorical(key, _stored(list(distribution.choices))))
    if isinstance(distribution, FloatRange):
        return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                                   log=distribution.log)
    return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def _stored(values: list[Any]) -> list[Any]:
    """Choices as Optuna stores them: None, bool, int, float and str as they are; if any is a list (e.g. layer
    widths), all as JSON text."""
    plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
    return list(values) if plain else [json.dumps(v) for v in values]


def config_value(distribution, stored: Any) -> Any:
    """A value as Optuna stored it (see `_stored`) -> the config value."""
    if isinstance(distribution, Choice) and _stored(list(distribution.choices)) != list(distribution.choices):
        return json.loads(stored)
    return stored


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


def counted_trials(study, up_to: int | None = None) -> int:
    """Trials that count toward the sweep's total (numbered up to `up_to`, if given): every trial, except those
    a re-queued copy replaces (a trial whose process died or was stopped runs again, once, under a new number)
    and those skipped for being over the total."""
    return len(_counted(study.get_trials(deepcopy=False), up_to))


def _counted(trials, up_to: int | None = None) -> list:
    replaced = {t.user_attrs["replaces"] for t in trials if "replaces" in t.user_attrs}
    return [t for t in trials if t.number not in replaced and "skipped" not in t.user_attrs
            and (up_to is None or t.number <= up_to)]


def requeue(study, trial) -> None:
    """Run a stopped trial's values again later, as a new trial that replaces it."""
    study.enqueue_trial(trial.params, user_attrs={"replaces": trial.number}, skip_if_exists=False)


def requeue_dead_trials(study) -> list[int]:
    """Trials left running by a process of this machine that is gone (killed): failed, and re-queued.
    (Dead workers of other machines need a database storage, whose heartbeat does the same.)"""
    from optuna.trial import TrialState

    host, numbers = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            requeue(study, trial)
            numbers.append(trial.number)
    return numbers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
