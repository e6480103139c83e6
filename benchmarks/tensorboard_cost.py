"""What TensorBoard costs: whole `mnist train` runs of the shipped MLP with it off and on, taking turns."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.processes import MNIST, ROOT, run_checked, run_folder, take_turns


def tensorboard_cost(args) -> list[dict]:
    """Whole `mnist train` runs of the shipped MLP (the fastest steps, so the most exposed to per-step costs),
    6 epochs, TensorBoard off vs on (default every 10th step's loss, and every step's), taking turns.
    steady s: the training time of epochs 2-6 (history.csv; epoch 1 is mostly XLA compiling), where the
    per-step losses are collected; wall s: the whole run (metrics.json), where the events are written."""

    from mnist_pipeline.reports import run_reader

    settings = {"off": ["output.tensorboard.enabled=false"], "on (every 10 steps)": [],
                "on (every step)": ["output.tensorboard.loss_every_steps=1"]}
    names = list(settings)
    with tempfile.TemporaryDirectory() as out:
        def measure(name: str) -> tuple[float, float]:  # (steady, wall) seconds of one run
            command = [MNIST, "train", "--config", str(ROOT / "configs/mlp.yaml"), "--epochs", "6", "--device",
                       "cpu", "--output-dir", out, *(["--data-dir", args.data_dir] if args.data_dir else []),
                       *[f"--set={item}" for item in settings[name]]]
            run_dir = Path(run_folder(run_checked(command)))
            metrics = json.loads((run_dir / "metrics.json").read_text())
            history = run_reader.read_history(run_dir)[1:]  # epoch 1 is mostly XLA compiling
            return sum(row["seconds"] for row in history), metrics["wall_seconds"]

        runs = take_turns(names, args.rounds, measure)
    seconds = {name: {"steady": [steady for steady, _ in pairs], "wall": [wall for _, wall in pairs]}
               for name, pairs in runs.items()}
    off = {kind: statistics.median(values) for kind, values in seconds["off"].items()}
    rows = []
    for name in names:
        median = {kind: statistics.median(values) for kind, values in seconds[name].items()}
        rows.append({"tensorboard": name, "steady s": round(median["steady"], 3),
                     "steady / off": round(median["steady"] / off["steady"], 3),
                     "steady spread": [round(min(seconds[name]["steady"]), 3), round(max(seconds[name]["steady"]), 3)],
                     "wall s": round(median["wall"], 2), "wall / off": round(median["wall"] / off["wall"], 3),
                     "wall spread": [round(min(seconds[name]["wall"]), 2), round(max(seconds[name]["wall"]), 2)]})
    return rows
