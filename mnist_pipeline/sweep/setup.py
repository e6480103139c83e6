"""A sweep from the command line: its folder, space and settings, every input checked before anything runs;
sweep.json and base.yaml make the folder self-contained and let a re-run check it is the same sweep."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.config import load_config, to_yaml
from mnist_pipeline.config.schema import NAME_PATTERN
from mnist_pipeline.config.space import SweepSpace, check_space, grid, load_space, override
from mnist_pipeline.errors import ConfigError, brief, quote
from mnist_pipeline.reports import run_folder
from mnist_pipeline.sweep.sweep_file import (
    comparable,
    masked,
    read_sweep_file,
    recorded_trials,
    sweep_damaged,
    what_differs,
)
from mnist_pipeline.sweep.trainable import trainable_here

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
    trials_before: int | None = None  # the total sweep.json held before this command (None: a new sweep)
    # What `record_sweep` writes once the storage has opened ({file name: text}); empty: nothing to write.
    pending: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def base(self) -> Path:
        return self.folder / BASE_CONFIG

    @property
    def output_dir(self) -> Path:
        return self.folder.parent.parent

    @property
    def objective_key(self) -> str:
        return f"best_{self.space.objective}"  # in metrics.json: the best epoch's validation value

    def describe(self, base: dict[str, Any]) -> dict[str, Any]:
        """What makes two commands the same sweep (sweep.json, compared on every start). Not the trial count:
        like Optuna's own `optimize`, a re-run may ask for more trials (or fewer: it stops earlier)."""
        space = {**self.space.model_dump(mode="json", exclude={"params", "trials"}),
                 "params": {key: d.model_dump(mode="json") for key, d in self.space.params.items()}}
        return {"base": base, "space": space, "seeds": list(self.seeds) if self.seeds else None,
                "prune": self.prune}


def make_sweep(config_path, space_path, trials, storage, name, seeds, prune, overrides, data_dir, device,
               output_dir, workers: int = 1) -> Sweep:
    """A sweep from the command line, every input checked (space values against the base config and this
    machine too) before anything is written or imported. Nothing is written here: `record_sweep` writes
    sweep.json and base.yaml once the study's storage has opened, so a failed start leaves nothing behind."""
    flags = [override(k, v) for k, v in (("data.data_dir", data_dir), ("training.device", device)) if v is not None]
    cfg = load_config(config_path, [*overrides, *flags])
    trainable_here(cfg)
    space = load_space(space_path)
    seed_list = _parse_seeds(seeds)
    check_space(space, space_path, config_path, [*overrides, *flags],
                reserved=("training.seed",) if seed_list else (), check=trainable_here)
    check_storage(storage, workers)
    name = name or f"{Path(config_path).stem if config_path else 'defaults'}-{Path(space_path).stem}"
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"--name {quote(name)}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter "
                          f"or digit")
    total = trials or (math.prod(len(v) for v in grid(space).values()) if space.sampler == "grid"
                       else space.trials)
    folder = Path(output_dir) / "sweeps" / name
    path = folder / SWEEP_FILE
    recorded = read_sweep_file(path) if path.exists() or path.is_symlink() else None
    sweep = Sweep(name, folder, space, total, seed_list, prune, storage, sampler_seed=cfg.training.seed,
                  trials_before=recorded_trials(recorded) if recorded else None)
    described = sweep.describe(cfg.model_dump(mode="json"))
    pending = {}
    if recorded:
        differences = what_differs(comparable(recorded), {**described, "storage": masked(storage)})
        if differences and started(folder, recorded.get("storage")):
            raise ConfigError(f"sweep {name!r} ({folder}) was started with {'; and with '.join(differences)}; "
                              f"run it as it started (only --trials may change), or pick another --name")
        if differences:  # a start that ran no trial (e.g. a storage that did not open): this command corrects it
            recorded = None
            sweep = Sweep(name, folder, space, total, seed_list, prune, storage, sampler_seed=cfg.training.seed)
    if not recorded:
        pending[BASE_CONFIG] = to_yaml(cfg)
    if sweep.trials != sweep.trials_before:  # the total `mnist sweep report` reads back
        pending[SWEEP_FILE] = json.dumps({"describe": described, "trials": total, "storage": storage,
                                          "sampler_seed": sweep.sampler_seed}, indent=2)
    return Sweep(**{**sweep.__dict__, "pending": pending})


def record_sweep(sweep: Sweep) -> None:
    """Write the sweep.json and base.yaml `make_sweep` prepared (base.yaml first: sweep.json says it is done)."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    for name in (BASE_CONFIG, SWEEP_FILE):
        if name in sweep.pending:
            run_folder.write_text(sweep.folder / name, sweep.pending[name] + ("" if name == BASE_CONFIG else "\n"))


def started(folder: Path, storage: str | None) -> bool:
    """Whether a sweep folder's study has run any trial: a run folder here, a journal with a trial, or (for a
    database) a trial in the study there. A storage that does not open ran nothing."""
    runs = folder / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        return True
    if not storage:
        journal = folder / JOURNAL
        try:
            with journal.open("rb") as f:
                return any(b'"op_code":4' in line or b'"op_code": 4' in line for line in f)  # 4: CREATE_TRIAL
        except OSError:
            return journal.exists()
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        summaries = optuna.study.get_all_study_summaries(storage=storage)
    except Exception:
        return False
    return any(s.study_name == folder.name and s.n_trials for s in summaries)


def check_storage(storage: str | None, workers: int) -> None:
    """Refuse a storage several processes cannot share with --workers (an in-memory SQLite database is one
    per process), and a URL that is not one, before anything opens it."""
    if storage is None:
        return
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", storage):
        raise ConfigError(f"--storage {quote(masked(storage))}: not a database URL; give an SQLAlchemy URL such as "
                          f"sqlite:///sweeps.db or postgresql+psycopg2://user:pass@host/db, or leave --storage out "
                          f"for the journal file in the sweep's folder")
    in_memory = re.fullmatch(r"sqlite(\+\w+)?://(/(:memory:)?)?(\?.*)?", storage) is not None
    if in_memory and workers > 1:
        raise ConfigError(f"--storage {storage}: an in-memory SQLite database lives in one process, so --workers "
                          f"{workers} could not share it; give a file (e.g. sqlite:///sweep.db), or leave --storage "
                          f"out")


def reopen_sweep(folder: Path, storage: str | None) -> Sweep:
    """The sweep a folder holds (for `mnist sweep report`)."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        others = sorted(p.parent.name for p in folder.parent.glob(f"*/{SWEEP_FILE}") if p.parent != folder)
        there = (f"the sweeps there: {', '.join(others)}" if others else
                 f"start one with `mnist sweep --space FILE --name {folder.name}`")
        if not folder.exists():
            raise ConfigError(f"sweep {folder.name!r} does not exist: no folder {folder}; {there} (or pass the "
                              f"--output-dir the sweep ran with)")
        raise ConfigError(f"{folder} is not a sweep folder (it has no {SWEEP_FILE}, which `mnist sweep` writes "
                          f"first); {there}")
    recorded = read_sweep_file(path)
    described = recorded["describe"]
    try:
        space = SweepSpace.model_validate(described["space"])
        return Sweep(folder.name, folder, space, recorded_trials(recorded),
                     tuple(described["seeds"] or ()) or None, bool(described["prune"]),
                     storage or recorded.get("storage"), int(recorded.get("sampler_seed") or 0))
    except Exception as exc:  # valid JSON, not what a sweep writes (a ValidationError, a wrong type)
        raise sweep_damaged(path, f"not what `mnist sweep` writes ({type(exc).__name__}: {brief(exc)})") from None


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
