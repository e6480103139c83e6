"""Float vs int8 exports of one completed run, per format (LiteRT, ONNX): `mnist export` and `mnist export
--quantize int8` into a temporary folder, then each file in its own runtime (LiteRT's interpreter, onnxruntime,
each with its default threads, as the guide's snippets load them): test accuracy on the run's test split, the
drop in points, file sizes, and mean latency per call for a batch of 1 and of 256 raw test digits, the float
and int8 files taking turns so that a slow spell of the VM falls on both.

Usage: python benchmarks/int8_exports.py RUN_DIR [--data-dir DIR] [--rounds 3]
       python benchmarks/bench.py --only int8 [--data-dir DIR]   (trains configs/cnn.yaml first, ~2 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run as a script, this folder is on sys.path, not the repository root that holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.processes import MNIST, ROOT, run_checked, run_folder  # noqa: E402

FORMATS = ("tflite", "onnx")
BATCHES = {1: 300, 256: 20}  # batch size -> timed calls per round (each round also makes 3 untimed warm-up calls)


def runner(fmt: str, path: Path):
    """A function from a (batch, 28, 28) float32 array of 0-255 pixels to its (batch, 10) probabilities."""
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        signature = Interpreter(model_path=str(path)).get_signature_runner()
        return lambda batch: signature(pixels=batch)["probabilities"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["probabilities"], {"pixels": batch})[0]


def accuracy(run, images: np.ndarray, labels: np.ndarray) -> float:
    answers = np.concatenate([run(images[i:i + 256]) for i in range(0, len(images), 256)])
    return float(np.mean(answers.argmax(axis=1) == labels))


def latency_ms(runs: dict, images: np.ndarray, rounds: int) -> dict:
    """Mean milliseconds per call of each runner, per batch size: the median over `rounds` rounds, the runners
    taking turns within each round (the order alternating)."""
    samples = {(name, size): [] for name in runs for size in BATCHES}
    for round_ in range(rounds):
        for name in list(runs)[::1 if round_ % 2 == 0 else -1]:
            for size, calls in BATCHES.items():
                batch = np.ascontiguousarray(images[:size])
                for _ in range(3):
                    runs[name](batch)
                start = time.perf_counter()
                for _ in range(calls):
                    runs[name](batch)
                samples[name, size].append(1000 * (time.perf_counter() - start) / calls)
    return {key: statistics.median(values) for key, values in samples.items()}


def measure(run_dir: str | Path, data_dir: str | None, rounds: int = 3) -> list[dict]:
    """One row per format: float and int8 side by side (accuracy, sizes, latency)."""
    from mnist_pipeline.config import load_config
    from mnist_pipeline.inference import split_arrays

    run_dir = Path(run_dir)
    images, labels, _ = split_arrays(load_config(run_dir / "config.yaml"), "test", data_dir)
    images = images.astype(np.float32)  # raw pixel values 0-255, as clients feed them
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for fmt in FORMATS:
            paths = {"float": Path(out) / f"model.{fmt}", "int8": Path(out) / f"model.int8.{fmt}"}
            common = [MNIST, "export", str(run_dir), "--format", fmt]
            run_checked([*common, "--output", str(paths["float"])], "float export failed")
            # Written even past the default budget: the bench reports the loss, it does not judge it.
            run_checked([*common, "--output", str(paths["int8"]), "--quantize", "int8", "--allow-accuracy-drop",
                         *(["--data-dir", data_dir] if data_dir else [])], "int8 export failed")
            runs = {name: runner(fmt, path) for name, path in paths.items()}
            scores = {name: accuracy(run, images, labels) for name, run in runs.items()}
            sizes = {name: path.stat().st_size for name, path in paths.items()}
            times = latency_ms(runs, images, rounds)
            rows.append({
                "format": fmt, "float accuracy": round(scores["float"], 4), "int8 accuracy": round(scores["int8"], 4),
                "drop (points)": round(100 * (scores["float"] - scores["int8"]), 2),
                "float KiB": round(sizes["float"] / 1024), "int8 KiB": round(sizes["int8"] / 1024),
                "size ratio": round(sizes["float"] / sizes["int8"], 2),
                **{f"{name} ms, batch {size}": round(times[name, size], 3 if size == 1 else 2)
                   for size in BATCHES for name in paths}})
    return rows


def int8_exports(args) -> list[dict]:
    """`bench.py --only int8`: train the shipped CNN (configs/cnn.yaml, as shipped) and measure its exports."""
    with tempfile.TemporaryDirectory() as out:
        command = [MNIST, "train", "--config", str(ROOT / "configs/cnn.yaml"), "--output-dir", out, "--quiet",
                   *(["--data-dir", args.data_dir] if args.data_dir else [])]
        return measure(run_folder(run_checked(command)), args.data_dir, args.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.run_dir, args.data_dir, args.rounds)
    print(json.dumps({"run": str(args.run_dir), "rows": rows}, indent=2))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")


if __name__ == "__main__":
    main()
