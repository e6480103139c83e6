"""The adversarial catalogue: hostile inputs, each run as a real `mnist` process by tests/test_catalogue.py.

No tests live here, only tables. Each module lists the `Case`s of what it attacks: configs.py (configs, flags,
worker addresses, config bases, compare/config/diagnose), data_files.py (data sets and files to predict),
run_folders.py (resume, evaluate, ensemble, report on damaged runs), exports_and_json.py (exports and `--json`
of damaged or diverged runs), sweeps.py (refused sweeps and space files) and sweep_folders.py (damaged sweep
folders, reruns, sweeps whose every trial fails). Add a case for every new kind of bad input.

A case's `make` builds its arguments in the test's temp dir from the fixture its `needs` names:
- "runs": make(tmp, data, completed, resumable, diverged), from conftest's `catalogue_runs_with_nan` (a data dir,
  a completed MLP run, one SIGKILLed after epoch 1 of 3, a completed run whose weights are NaN);
- "sweep": make(tmp, made), from conftest's `catalogue_sweep` ((data dir, a finished 2-trial sweep folder, the
  command that made it)).
It returns (args, folder that must not change or None) or (args, folder, env or None).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--device", "cpu"]

# Every check the runner applies; a case may leave some off with `skip_checks` (and a comment saying why).
CHECKS = frozenset({"half-run", "not-started"})


@dataclass(frozen=True)
class Case:
    """One hostile input: `mnist` must exit with `code`; on failure one `error: ...` line holding each of
    `words`, on success `words` in stdout and, with --json, strict JSON that `check(value)` accepts."""

    id: str
    make: Callable
    code: int
    words: list[str]
    check: Callable | None = None
    needs: str = "runs"
    skip_checks: frozenset[str] = frozenset()

    def __post_init__(self):
        assert self.needs in ("runs", "sweep"), self.needs
        assert self.skip_checks <= CHECKS, self.skip_checks


HELD_LOCKS: list[tuple[int, Path]] = []  # (file descriptor, path) of locks a case holds while its command runs


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers (JavaScript, jq, Go) do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def leftovers(folder: Path) -> list[Path]:
    """Temporaries and lock files an interrupted or failed command must not leave."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".export-lock")]


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line names `text` (a case's temp dir): none may outlive its command."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def workers_alive(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (psutil is not installed: /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((row for row in (proc / "status").read_text().splitlines() if row.startswith("State")), "")
                if "mnist_pipeline" in line and marker in line and "zombie" not in state:
                    found.append(line)
        except (OSError, ValueError):
            continue
    return found
