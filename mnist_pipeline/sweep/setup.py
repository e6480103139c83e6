"""A sweep from the command line: its folder, space and settings, every input checked before anything runs;
sweep.json and base.yaml make the folder self-contained and let a re-run check it is the same sweep."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.config import load_config, to_yaml
from mnist_pipeline.config.schema import _NAME_PATTERN
from mnist_pipeline.config.space import SweepSpace, check_space, grid, load_space, override
from mnist_pipeline.errors import ConfigError, PipelineError
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


