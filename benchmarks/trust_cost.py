"""What the trust report costs: one trained run of the shipped CNN (configs/cnn.yaml, 2 epochs), then, taking
turns: `mnist report` with and without its trust sections, `mnist evaluate` with and without `--corruptions`;
and, in a worker process, the seconds the training run spends fitting the temperature and computing the
saliency maps, and the seconds the corruptions alone take (`python -m benchmarks.trust_cost RUN`)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.processes import MNIST, ROOT, last_json, module, run_checked, run_folder, take_turns


def trust_cost(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        command = [MNIST, "train", "--config", str(ROOT / "configs/cnn.yaml"), "--epochs", "2", "--output-dir", out,
                   *(["--data-dir", args.data_dir] if args.data_dir else [])]
        run_dir = Path(run_folder(run_checked(command)))
        plain = _without_trust(run_dir, Path(out) / "plain" / run_dir.name)
        commands = {"report, trust sections": [MNIST, "report", str(run_dir)],
                    "report, without them": [MNIST, "report", str(plain)],
                    "evaluate --corruptions": [MNIST, "evaluate", str(run_dir), "--corruptions"],
                    "evaluate": [MNIST, "evaluate", str(run_dir)]}
        if args.data_dir:
            for name in ("evaluate --corruptions", "evaluate"):
                commands[name] += ["--data-dir", args.data_dir]

        def measure(name: str) -> float:
            start = time.perf_counter()
            run_checked(commands[name])
            return time.perf_counter() - start

        seconds = take_turns(list(commands), args.rounds, measure)
        inside = last_json(run_checked(module("trust_cost", str(run_dir))))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rows = [{"what": name, "seconds": round(median[name], 2), "spread": [round(min(v), 2), round(max(v), 2)],
             "vs plain": round(median[name] / median[base], 2)}
            for name, v, base in ((n, seconds[n], b) for n, b in (
                ("report, trust sections", "report, without them"), ("report, without them", "report, without them"),
                ("evaluate --corruptions", "evaluate"), ("evaluate", "evaluate")))]
    rows += [{"what": f"in training: {name}", "seconds": value, "spread": "-", "vs plain": "-"}
             for name, value in inside.items()]
    return rows


def _without_trust(run_dir: Path, copy: Path) -> Path:
    """A copy of the run as it was before the trust report: no calibration, saliency maps or robustness."""
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.pop("calibration")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with np.load(copy / "report_data.npz") as data:
        kept = {k: data[k] for k in data.files if not k.startswith(("mistake_saliency", "saliency_"))}
    np.savez_compressed(copy / "report_data.npz", **kept)
    return copy


def _inside_training(run_dir: str) -> dict:
    """Seconds of what a training run adds after its test: the temperature's fit and the saliency maps (on
    the float32 model, as report_data does)."""
    from mnist_pipeline.calibration import calibrate
    from mnist_pipeline.inference import load_run, split_arrays
    from mnist_pipeline.reevaluation import run_probabilities
    from mnist_pipeline.report_data import SALIENCY_COUNT, mistake_saliency

    run = load_run(run_dir, precision="float32")
    val = split_arrays(run.config, "val", None)
    test = split_arrays(run.config, "test", None)
    val_p = run_probabilities(run, val[0], val[1], "val")[2]
    test_p = run_probabilities(run, test[0], test[1], "test")[2]
    start = time.perf_counter()
    calibrate(val_p, val[1], test_p, test[1])
    fitting = time.perf_counter() - start
    data = np.load(Path(run_dir) / "report_data.npz")
    mistakes = data["mistake_indices"][:SALIENCY_COUNT]
    start = time.perf_counter()
    maps = mistake_saliency(run.model, run.normalization, test[0][mistakes], test_p[mistakes].argmax(axis=1),
                            test[1][mistakes])  # what report_data computes after a training's test
    explaining = time.perf_counter() - start
    from mnist_pipeline.corruptions import CORRUPTIONS, corrupt

    images = np.resize(test[0], (10_000, *test[0].shape[1:]))  # the test digits repeated to 10,000
    corrupting = {}
    for name in CORRUPTIONS:
        begin = time.perf_counter()
        corrupt(images, name, 0)
        corrupting[name] = time.perf_counter() - begin
    slowest = sorted(corrupting, key=corrupting.get)[-2:]
    return {"temperature fit and scores": round(fitting, 3),
            f"saliency maps of {len(mistakes)} mistakes ({maps.steps} steps)": round(explaining, 3),
            f"all {len(CORRUPTIONS)} corruptions of 10,000 test digits (slowest: "
            f"{', '.join(f'{n} {corrupting[n]:.1f} s' for n in slowest)})": round(sum(corrupting.values()), 2)}

if __name__ == "__main__":
    print(json.dumps(_inside_training(sys.argv[1])))
