"""The sweep's Optuna study: its storage (the journal file in the sweep's folder, or a shared database),
sampler and pruner; how choices are stored in it; and the bookkeeping that keeps the trial count exact when
processes die or race. Running the trials is `trials`'s job."""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from typing import Any

from mnist_pipeline.config.space import Choice, SweepSpace, grid
from mnist_pipeline.errors import PipelineError, brief
from mnist_pipeline.sweep.setup import JOURNAL, Sweep
from mnist_pipeline.sweep.sweep_file import masked


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
        choices = {key: stored_choices(values) for key, values in grid(space).items()}
        return optuna.samplers.GridSampler(choices, seed=seed)
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


def stored_choices(values: list[Any]) -> list[Any]:
    """Choices as Optuna stores them: None, bool, int, float and str as they are; if any is a list (e.g. layer
    widths), all as JSON text."""
    plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
    return list(values) if plain else [json.dumps(v) for v in values]


def config_value(distribution, stored: Any) -> Any:
    """A value as Optuna stored it (see `stored_choices`) -> the config value."""
    if isinstance(distribution, Choice) and stored_choices(list(distribution.choices)) != list(distribution.choices):
        return json.loads(stored)
    return stored


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
