"""sweep.json read back: checked to be what `mnist sweep` writes, and compared with a new command in words
(what differs from the sweep as it started)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mnist_pipeline.config import flat_values, yaml_value
from mnist_pipeline.errors import PipelineError, brief


def recorded_trials(recorded: dict[str, Any]) -> int:
    """The sweep's total: sweep.json's own, or (written before a re-run could change it) its describe's."""
    return recorded.get("trials") or recorded["describe"]["trials"]


def comparable(recorded: dict[str, Any]) -> dict[str, Any]:
    """sweep.json's describe as `Sweep.describe` writes it now: sweeps started before the trial count could
    change kept it there and in the space; and the storage, since another one holds another study."""
    described = {key: value for key, value in recorded["describe"].items() if key != "trials"}
    described["space"] = {key: value for key, value in described["space"].items() if key != "trials"}
    return {**described, "storage": masked(recorded.get("storage"))}


def what_differs(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
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


def sweep_damaged(path: Path, problem: str) -> PipelineError:
    """The error for a sweep file that is not what `mnist sweep` wrote, naming it and what to do."""
    return PipelineError(f"{path}: {problem}; the sweep cannot be read from it: start it again under another "
                         f"--name (or delete {path.parent} to start it afresh)")


def read_sweep_file(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > 4 * 2**20:
            raise ValueError("larger than 4 MiB")
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise sweep_damaged(path, f"not valid JSON ({brief(exc)})") from None
    describe = data.get("describe") if isinstance(data, dict) else None
    if not (isinstance(describe, dict) and {"base", "space", "seeds", "prune"} <= describe.keys()
            and isinstance(describe["space"], dict) and isinstance(describe["base"], dict)):
        raise sweep_damaged(path, "damaged (not the JSON a sweep writes)")
    try:
        if not isinstance(recorded_trials(data), int):
            raise TypeError("trials is not an integer")
    except (KeyError, TypeError) as exc:
        raise sweep_damaged(path, f"damaged (no trial count: {brief(exc)})") from None
    if not (data.get("storage") is None or isinstance(data.get("storage"), str)):
        raise sweep_damaged(path, "damaged (storage is not a URL)")
    return data
