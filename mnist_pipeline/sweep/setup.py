"""A sweep from the command line: its folder, space and settings, every input checked before anything runs;
sweep.json and base.yaml make the folder self-contained and let a re-run check it is the same sweep."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.config import flat_values, load_config, to_yaml, yaml_value
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
    trials_before: int | None = None  # the total sweep.json held before this command (None: a new sweep)

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
        raise ConfigError(f"--name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                          f"digit")
    total = trials or (len(list(itertools.product(*grid(space).values()))) if space.sampler == "grid"
                       else space.trials)
    folder = Path(output_dir) / "sweeps" / name
    path = folder / SWEEP_FILE
    recorded = _read_sweep_file(path) if path.exists() else None
    sweep = Sweep(name, folder, space, total, seed_list, prune, storage, sampler_seed=cfg.training.seed,
                  trials_before=_recorded_trials(recorded) if recorded else None)
    described = sweep.describe(cfg.model_dump(mode="json"))
    if recorded:
        differences = _differences(_comparable(recorded), {**described, "storage": masked(storage)})
        if differences:
            raise ConfigError(f"sweep {name!r} ({folder}) was started with {'; and with '.join(differences)}; "
                              f"run it as it started (only --trials may change), or pick another --name")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        rf.write_text(sweep.base, to_yaml(cfg))
    if sweep.trials != sweep.trials_before:  # the total `mnist sweep report` reads back
        rf.write_json(path, {"describe": described, "trials": total, "storage": storage,
                             "sampler_seed": sweep.sampler_seed})
    return sweep


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
    recorded = _read_sweep_file(path)
    described = recorded["describe"]
    space = SweepSpace.model_validate(described["space"])
    return Sweep(folder.name, folder, space, _recorded_trials(recorded), tuple(described["seeds"] or ()) or None,
                 described["prune"], storage or recorded.get("storage"), recorded.get("sampler_seed", 0))


def _recorded_trials(recorded: dict[str, Any]) -> int:
    """The sweep's total: sweep.json's own, or (written before a re-run could change it) its describe's."""
    return recorded.get("trials") or recorded["describe"]["trials"]


def _comparable(recorded: dict[str, Any]) -> dict[str, Any]:
    """sweep.json's describe as `Sweep.describe` writes it now: sweeps started before the trial count could
    change kept it there and in the space; and the storage, since another one holds another study."""
    described = {key: value for key, value in recorded["describe"].items() if key != "trials"}
    described["space"] = {key: value for key, value in described["space"].items() if key != "trials"}
    return {**described, "storage": masked(recorded.get("storage"))}


def _differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the sweep as started and this command, in words, e.g. `another base config
    (training.epochs was 2, now 7)`, `pruning off (now on)`."""
    differences = []
    if recorded["base"] != now["base"]:
        was, new = dict(flat_values(recorded["base"])), dict(flat_values(now["base"]))
        changed = [f"{key} was {yaml_value(was.get(key))}, now {yaml_value(new.get(key))}"
                   for key in dict.fromkeys([*was, *new]) if was.get(key) != new.get(key)]
        differences.append(f"another base config ({_few(changed)})")
    if recorded["space"] != now["space"]:
        was, new = recorded["space"], now["space"]
        changed = [key for key in dict.fromkeys([*was, *new]) if key != "params" and was.get(key) != new.get(key)]
        was, new = was.get("params", {}), new.get("params", {})
        changed += [key for key in dict.fromkeys([*was, *new]) if was.get(key) != new.get(key)]
        differences.append(f"another search space ({_few(changed)} {'differs' if len(changed) == 1 else 'differ'})")
    if recorded["seeds"] != now["seeds"]:
        differences.append(f"{_seeds(recorded['seeds'])} (now {_seeds(now['seeds'])})")
    if recorded["prune"] != now["prune"]:
        differences.append(f"pruning {'on' if recorded['prune'] else 'off'} (now {'on' if now['prune'] else 'off'})")
    if recorded["storage"] != now["storage"]:
        # (compared without passwords, which may change) another storage holds another study
        differences.append(f"{_storage(recorded['storage'])} (now {_storage(now['storage'])})")
    return differences


def _few(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _seeds(seeds: list[int] | None) -> str:
    return f"--seeds {','.join(map(str, seeds))}" if seeds else "no --seeds"


def _storage(url: str | None) -> str:
    return f"--storage {url}" if url else "the journal file in its folder (no --storage)"


def masked(url: str | None) -> str | None:
    """A storage URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url) if url else url


def _read_sweep_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("describe"), dict) and {
                "base", "space", "seeds", "prune"} <= data["describe"].keys():
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


