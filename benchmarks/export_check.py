"""Size and faithfulness of each export of one completed run: `mnist export` to every format, then each file run
by its own runtime on the run's raw test digits, against the test probabilities the run recorded (divided by its
temperature, as the exports divide them).

Usage: python benchmarks/export_check.py RUN_DIR [--data-dir DIR]
(tests/test_export.py checks the same in fresh processes; this measures it on a real run for docs/benchmarks.md.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FILES = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}


def predict(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    if fmt == "savedmodel":
        import tensorflow as tf

        return tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))[
            "output_0"].numpy()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(path)).get_signature_runner()(images=images)["output_0"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    from mnist_pipeline.calibration import apply_temperature
    from mnist_pipeline.config import load_config
    from mnist_pipeline.inference import split_arrays
    from mnist_pipeline.reports import run_reader

    config = load_config(args.run_dir / "config.yaml")
    images, labels, source = split_arrays(config, "test", args.data_dir)
    images = images.astype(np.float32)  # raw pixel values 0-255
    recorded = np.load(args.run_dir / "report_data.npz")["test_probabilities"]
    temperature = run_reader.temperature(run_reader.read_metrics(args.run_dir))
    if temperature is not None:  # exports divide by it, as predict does
        recorded = apply_temperature(recorded, temperature)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for fmt, name in FILES.items():
            path = Path(out) / name
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "mnist_pipeline", "export", str(args.run_dir), "--format",
                                   fmt, "--output", str(path)], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(done.stderr)
            seconds = time.perf_counter() - start
            probabilities = predict(fmt, path, images)
            rows.append({"format": fmt, "size_kb": round(size_bytes(path) / 1024), "export_seconds": round(seconds, 1),
                         "max_abs_difference": float(np.abs(probabilities - recorded).max()),
                         "same_classes": int((probabilities.argmax(1) == recorded.argmax(1)).sum()),
                         "accuracy": float((probabilities.argmax(1) == labels).mean())})
    model_kb = round((args.run_dir / "model.keras").stat().st_size / 1024)
    print(json.dumps({"run": str(args.run_dir), "data": source, "examples": len(labels), "model_keras_kb": model_kb,
                      "recorded_test_accuracy": json.loads((args.run_dir / "metrics.json").read_text())[
                          "test_accuracy"], "formats": rows}, indent=2))


if __name__ == "__main__":
    main()
