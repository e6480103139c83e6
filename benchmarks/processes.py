"""Running the measured processes: each in its own process from the repository root, a failure ending the
bench with the command and its error output, and processes taking turns.

This VM's speed drifts by up to 2x over minutes, so measurements that are compared take turns: several rounds
of one process each, the order rotating every round, so that a slow spell falls on all of them alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(Path(sys.executable).parent / "mnist")  # this environment's console script


def run_checked(command: list[str], failure: str = "bench run failed", **options) -> subprocess.CompletedProcess:
    """`command` run to its end from the repository root, its output captured; on failure the bench stops with
    `failure`, the command and the end of its error output."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **options)
    if result.returncode != 0:
        sys.exit(f"{failure}: {' '.join(command)}\n{result.stderr[-2000:]}")
    return result


def last_json(result: subprocess.CompletedProcess) -> Any:
    """What a worker printed last: one line of JSON."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_folder(result: subprocess.CompletedProcess) -> str:
    """The run folder `mnist train` printed last."""
    return result.stdout.strip().splitlines()[-1].removeprefix("run folder: ")


def module(name: str, *arguments: str) -> list[str]:
    """The command that runs worker module `benchmarks.<name>` in a process of its own."""
    return [sys.executable, "-m", f"benchmarks.{name}", *arguments]


def take_turns(names: list[str], rounds: int, measure: Callable[[str], Any]) -> dict[str, list[Any]]:
    """`measure(name)` once for each name in each of `rounds` rounds, the order rotating every round: every
    result, per name."""
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            results[name].append(measure(name))
    return results


def per_round(repeats: int, rounds: int) -> int:
    """Measured repeats per process when `repeats` are spread over `rounds` processes (rounded up)."""
    return -(-repeats // rounds)


def rates(results: list[dict]) -> list[float]:
    """images/s of every repeat of these processes, pooled."""
    return [rate for result in results for rate in result["images_per_second"]]


def spread(values: list[float]) -> list[int]:
    return [round(min(values)), round(max(values))]


def command_seconds(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
