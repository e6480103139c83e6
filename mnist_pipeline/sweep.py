"""`mnist sweep`: trials of one base config over a search space, on an Optuna study.

Optuna owns the sampling, the pruning and the study's storage, from which any number of processes on any number
of machines pull trials. Each trial is an ordinary run folder under the sweep's folder, trained by
`pipeline.run` without its test split: trials are chosen on validation only, and the sweep tests its best
trial once, at the end. Imports Optuna and (through the pipeline) TensorFlow: the CLI imports it only to sweep.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.config import load_config, to_yaml
from mnist_pipeline.config.space import Choice, FloatRange, SweepSpace, grid, override
from mnist_pipeline.errors import ConfigError, PipelineError, Pruned, brief
from mnist_pipeline.reports import run_folder as rf

SWEEP_FILE = "sweep.json"  # what the sweep is; a re-run of the same name must be the same sweep
BASE_CONFIG = "base.yaml"  # the resolved base config every trial starts from: the folder needs nothing else
JOURNAL = "study.journal"  # the embedded default storage: Optuna's journal file (no server)


@dataclass(frozen=True)
class Sweep:
    """One sweep: its folder, space and settings."""

    name: str
    folder: Path  # <output dir>/sweeps/<name>/: sweep.json, base.yaml, the study journal, runs/, the report
    space: SweepSpace
    trials: int  # in the study, over every worker and machine
    seeds: tuple[int, ...] | None  # None: the base config's seed, once per trial
    prune: bool
    storage: str | None  # an SQLAlchemy URL; None: the journal file in the folder
    sampler_seed: int = 0

    @property
    def base(self) -> Path:
        return self.folder / BASE_CONFIG

    @property
    def objective_key(self) -> str:
        return f"best_{self.space.objective}"  # in metrics.json: the best epoch's validation value

    def describe(self, base: dict[str, Any]) -> dict[str, Any]:
        """What makes two commands the same sweep (sweep.json, compared on every start)."""
        space = {**self.space.model_dump(mode="json", exclude={"params"}),
                 "params": {key: d.model_dump(mode="json") for key, d in self.space.params.items()}}
        return {"base": base, "space": space,
                "seeds": list(self.seeds) if self.seeds else None, "trials": self.trials, "prune": self.prune}


def make_sweep(config_path, space_path, trials, storage, name, seeds, prune, overrides, data_dir, device,
               output_dir) -> Sweep:
    """A sweep from the command line, every input checked (space values against the base config too) before
    anything is written or imported; its folder gets sweep.json and base.yaml, or must already hold the same."""
    from mnist_pipeline.config import to_yaml
    from mnist_pipeline.config.schema import _NAME_PATTERN
    from mnist_pipeline.config.space import check_space, load_space

    flags = [override(k, v) for k, v in (("data.data_dir", data_dir), ("training.device", device)) if v is not None]
    cfg = load_config(config_path, [*overrides, *flags])
    space = load_space(space_path)
    seed_list = _parse_seeds(seeds)
    check_space(space, space_path, config_path, [*overrides, *flags],
                reserved=("training.seed",) if seed_list else ())
    name = name or f"{Path(config_path).stem if config_path else 'defaults'}-{Path(space_path).stem}"
    if not re.fullmatch(_NAME_PATTERN, name):
        raise ConfigError(f"--name {name!r}: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    total = trials or (len(list(itertools.product(*grid(space).values()))) if space.sampler == "grid"
                       else space.trials)
    sweep = Sweep(name, Path(output_dir) / "sweeps" / name, space, total, seed_list, prune, storage,
                  sampler_seed=cfg.training.seed)
    described = sweep.describe(cfg.model_dump(mode="json"))
    path = sweep.folder / SWEEP_FILE
    if path.exists():
        recorded = _read_sweep_file(path)
        if recorded.get("describe") != described:
            changed = [key for key in described if recorded.get("describe", {}).get(key) != described[key]]
            raise ConfigError(f"sweep {name!r} ({sweep.folder}) was started with another "
                              f"{', '.join(changed) or 'setting'}; run it with the same config, space, seeds, "
                              f"trials and pruning, or pick another --name")
    else:
        sweep.folder.mkdir(parents=True, exist_ok=True)
        rf.write_text(sweep.base, to_yaml(cfg))
        rf.write_json(path, {"describe": described, "storage": storage, "sampler_seed": sweep.sampler_seed})
    return sweep


def reopen_sweep(folder: Path, storage: str | None) -> Sweep:
    """The sweep a folder holds (for `mnist sweep report`)."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: not a sweep folder (no {SWEEP_FILE}); sweeps are under <output dir>/sweeps/")
    recorded = _read_sweep_file(path)
    described = recorded["describe"]
    space = SweepSpace.model_validate(described["space"])
    return Sweep(folder.name, folder, space, described["trials"], tuple(described["seeds"] or ()) or None,
                 described["prune"], storage or recorded.get("storage"), recorded.get("sampler_seed", 0))


def _read_sweep_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("describe"), dict):
            return data
    except (OSError, ValueError):
        pass
    raise PipelineError(f"{path}: damaged (not the JSON a sweep writes); start the sweep under another --name")


def _parse_seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds expects integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if len(set(seeds)) != len(seeds) or not all(0 <= s < 2**31 for s in seeds) or len(seeds) > 100:
        raise ConfigError(f"--seeds: give 1-100 different seeds from 0 to {2**31 - 1}, got {text!r}")
    return seeds


def open_study(sweep: Sweep, sampler_seed: int | None = None):
    """The sweep's Optuna study, created or loaded (a re-run continues it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our one line per trial, not Optuna's INFO and WARNING
    if sweep.storage:
        # A database shared by machines: each running trial beats every 30 s; a trial silent for 2 minutes (its
        # machine died) is failed by the next worker that starts a trial, and re-queued once.
        storage = _database(sweep.storage)
    else:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(sweep.folder / JOURNAL)))
    return optuna.create_study(study_name=sweep.name, storage=storage, load_if_exists=True,
                               direction=sweep.space.direction, sampler=_sampler(sweep.space, sampler_seed),
                               pruner=_pruner(sweep.prune))


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
                raise PipelineError(f"--storage {_masked(url)}: cannot open the study there ({type(exc).__name__}: "
                                    f"{brief(exc)}); check the URL, the server and the database driver (e.g. "
                                    f"pip install psycopg2-binary for postgresql://)") from None
            time.sleep(0.5 + attempt)


def _masked(url: str) -> str:
    """A storage URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _sampler(space: SweepSpace, seed: int | None):
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


def run_trial(sweep: Sweep, trial, events_factory) -> float:
    """Train the trial's config once per seed (the first seed's epochs go to the pruner); return the mean of the
    objective over the seeds, and keep each seed's value, their standard deviation and run folders on the trial.
    Raises Pruned, or the run's error (the trial then fails)."""
    from mnist_pipeline.pipeline import run

    values = {key: suggest(trial, key, d) for key, d in sweep.space.params.items()}
    seeds = sweep.seeds or (None,)
    results, runs = [], []
    for index, seed in enumerate(seeds):
        name = f"trial-{trial.number:04d}" + (f"-seed{seed}" if seed is not None and len(seeds) > 1 else "")
        extra = [override(key, value) for key, value in values.items()]
        if seed is not None:
            extra.append(f"training.seed={seed}")
        cfg = load_config(sweep.base, extra, {"output.dir": str(sweep.folder), "output.name": name})
        result = run(cfg, events_factory(trial, report=index == 0), test=False)
        results.append(float(result.metrics[sweep.objective_key]))
        runs.append(result.run_dir.name)
        trial.set_user_attr("runs", runs)
        trial.set_user_attr("values", results)
    if len(results) > 1:
        trial.set_user_attr("std", statistics.stdev(results))
    return statistics.fmean(results)


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

    def events(trial, report: bool) -> Events:
        reporter = pruning_reporter(trial, sweep.space.objective) if report else Events().epoch
        return Events(epoch=reporter, stop_requested=stop_requested)

    def objective(trial) -> float:
        started.append(trial)
        if counted_trials(study, up_to=trial.number) > sweep.trials:
            # Trial numbers are given out in order: exactly the ones past the total step back, unrun, uncounted.
            trial.set_user_attr("skipped", "over the sweep's total: another worker took the last trial")
            raise _OverTotal
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # a re-run finds dead ones
        try:
            return run_trial(sweep, trial, events)
        except Pruned as exc:
            trial.set_user_attr("outcome", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # a NaN, a combination the config refuses, a full disk: this trial only
            message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {brief(exc)}"
            trial.set_user_attr("outcome", f"failed: {message}")
            raise _TrialFailed(message) from None

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
            f"{', '.join(f'{k}={show_value(v)}' for k, v in trial.params.items())}")


def show_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


BEST_CONFIG = "best.yaml"
BEST = "best.json"
FIGURES = {  # file -> (heading, Optuna's matplotlib function)
    "optimization_history.png": ("Optimization history", "plot_optimization_history"),
    "param_importances.png": ("Parameter importances", "plot_param_importances"),
    "parallel_coordinate.png": ("Parallel coordinates", "plot_parallel_coordinate"),
    "slice.png": ("Slices", "plot_slice"),
}


def trial_rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """Every trial (replaced ones left out), best first: completed by the objective, then pruned, then the rest."""
    rows = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value, "std": t.user_attrs.get("std"),
             "params": dict(t.params), "runs": t.user_attrs.get("runs", []), "outcome": t.user_attrs.get("outcome"),
             "seconds": t.duration.total_seconds() if t.duration else None, **_epochs(sweep, t.number)}
            for t in _counted(study.get_trials(deepcopy=False))]
    sign = -1 if sweep.space.direction == "maximize" else 1
    order = {"complete": 0, "pruned": 1}
    return sorted(rows, key=lambda r: (order.get(r["state"], 2), r["value"] is None,
                                       sign * (r["value"] or 0), r["trial"]))


def _epochs(sweep: Sweep, number: int) -> dict[str, Any]:
    """{epochs: trained, planned: configured, epoch_seconds: [...]} over a trial's run folders (pruned and
    failed ones too: they are found by name, `<timestamp>-trial-NNNN[-seedS]`)."""
    import yaml

    from mnist_pipeline.reports import run_files

    trained, planned, seconds = 0, 0, []
    for run in sorted((sweep.folder / "runs").glob(f"*-trial-{number:04d}*")):
        try:
            history = run_files.read_history(run) if (run / rf.HISTORY).exists() else []
            # every seed's run would have had as many epochs (a pruned trial stops before its other seeds)
            planned = int(yaml.safe_load((run / rf.CONFIG).read_text())["training"]["epochs"]) * len(
                sweep.seeds or (None,))
        except (PipelineError, OSError, ValueError, KeyError, TypeError):
            continue  # a damaged run folder: left out of the counts, the report still lists the trial
        trained += len(history)
        seconds += [row["seconds"] for row in history]
    return {"epochs": trained, "planned": planned, "epoch_seconds": seconds}


def pruning_savings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pruner saved: the epochs pruned trials did not train, and the time, estimated as what the
    pruned trials would have taken at the mean duration of a complete trial minus what they took."""
    pruned = [r for r in rows if r["state"] == "pruned"]
    complete = [r["seconds"] for r in rows if r["state"] == "complete" and r["seconds"] is not None]
    took = sum(r["seconds"] or 0 for r in pruned)
    saved = max(len(pruned) * statistics.fmean(complete) - took, 0.0) if complete and pruned else 0.0
    return {"pruned": len(pruned), "epochs_saved": sum(r["planned"] - r["epochs"] for r in pruned),
            "epochs_planned": sum(r["planned"] for r in rows), "seconds_saved": saved,
            "seconds_total": sum(r["seconds"] or 0 for r in rows)}


def best_on_test(sweep: Sweep, best: dict[str, Any]) -> dict[str, Any]:
    """The best trial's runs on the test split, computed once: kept in best.json for this trial."""
    from mnist_pipeline.inference import evaluate_run

    path = sweep.folder / BEST
    if path.exists():
        with_test = json.loads(path.read_text())
        if with_test.get("trial") == best["trial"] and with_test.get("test"):
            return with_test
    tests = [{"run": run, **{k: evaluate_run(sweep.folder / "runs" / run, "test")[k] for k in ("loss", "accuracy")}}
             for run in best["runs"]]
    accuracies = [t["accuracy"] for t in tests]
    with_test = {**best, "test": tests, "test_accuracy": statistics.fmean(accuracies),
                 "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None}
    rf.write_json(path, with_test)
    return with_test


def write_report(sweep: Sweep, study) -> dict[str, Any]:
    """Ranked trials, best.yaml, best.json (with the best trial's test accuracy, computed once), Optuna's
    figures, report.md and report.html in the sweep's folder; returns {rows, best, files}."""
    from mnist_pipeline.reports.document import Section, render_html, render_markdown

    rows = trial_rows(sweep, study)
    best = rows[0] if rows and rows[0]["state"] == "complete" else None
    sections = [Section("Sweep", columns=["", "value"], rows=[
        ["objective", f"{sweep.space.objective} ({sweep.space.direction}), best epoch of each run; validation only"],
        ["trials", _count_states(rows)],
        ["seeds per trial", ", ".join(map(str, sweep.seeds)) if sweep.seeds else "the base config's"],
        ["pruning saved", savings_text(pruning_savings(rows))],
        ["sampler, pruning", f"{sweep.space.sampler}, {'median pruner' if sweep.prune else 'off'}"]])]
    files = []
    if best:
        cfg = load_config(sweep.base, [override(k, config_value(sweep.space.params[k], v))
                                       for k, v in best["params"].items()],
                          {"output.name": f"{sweep.name}-best"})
        rf.write_text(sweep.folder / BEST_CONFIG, to_yaml(cfg))
        best = best_on_test(sweep, best)
        files.append(sweep.folder / BEST_CONFIG)
        spread = f" (sd {best['test_accuracy_std']:.4f})" if best.get("test_accuracy_std") is not None else ""
        sections.append(Section("Best trial", text=(
            f"Trial {best['trial']}: {sweep.space.objective} {best['value']:.4f}; test accuracy "
            f"{best['test_accuracy']:.4f}{spread}, measured once, after the sweep. Re-run it with "
            f"`mnist train --config {sweep.folder / BEST_CONFIG}`.")))
    sections.append(Section("Trials", columns=["trial", "state", sweep.space.objective, "sd", "seconds",
                                               *sweep.space.params, "outcome"],
                            rows=[[r["trial"], r["state"], _cell(r["value"]), _cell(r["std"]), _cell(r["seconds"], 1),
                                   *[show_value(r["params"].get(k, "-")) for k in sweep.space.params],
                                   r["outcome"] or ""] for r in rows]))
    for file, heading in _draw_figures(sweep, study).items():
        sections.append(Section(heading, image=file))
        files.append(sweep.folder / file)
    rf.write_text(sweep.folder / "report.md", render_markdown(f"Sweep {sweep.name}", sections))
    rf.write_text(sweep.folder / "report.html", render_html(f"Sweep {sweep.name}", sections, sweep.folder))
    return {"rows": rows, "best": best, "savings": pruning_savings(rows),
            "files": [*files, sweep.folder / "report.md", sweep.folder / "report.html"]}


def savings_text(saved: dict[str, Any]) -> str:
    return (f"{saved['pruned']} trials pruned: {saved['epochs_saved']} of {saved['epochs_planned']} planned epochs "
            f"not trained, about {saved['seconds_saved']:.0f} s of trial time saved (trials took "
            f"{saved['seconds_total']:.0f} s in all)")


def _count_states(rows: list[dict[str, Any]]) -> str:
    states = [r["state"] for r in rows]
    return ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running", "waiting")
                     if s in states)


def _cell(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _draw_figures(sweep: Sweep, study) -> dict[str, str]:
    """Optuna's own figures (matplotlib) as PNG; one that needs more finished trials than there are is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    drawn = {}
    for file, (heading, function) in FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib figures experimental; layout notes
            try:
                axes = getattr(optuna_plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two finished trials
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(sweep.folder / file, dpi=100, bbox_inches="tight")  # legends sit outside the axes
        plt.close(figure)
        drawn[file] = heading
    return drawn
