"""Peak resident memory of whole `mnist train` runs beside Keras `model.fit` processes and a process that only
imports TensorFlow, each read by a parent that runs only it (`peak_memory`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from benchmarks.processes import MNIST, ROOT, module

MEMORY_CONFIGS = ["mlp_fashion", "cnn_fashion_fast", "cnn_fashion"]
FIT_MEMORY_CONFIGS = ["mlp_fashion", "cnn_fashion_fast"]  # the two whose fit epoch is quick


def peak_mb(command: list[str]) -> float:
    """Peak resident memory of `command`'s process, in MB, read by a parent that runs only it."""
    result = subprocess.run(module("peak_memory", *command), capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bench run failed: {' '.join(command)}\n{result.stderr}")
    return float(result.stdout.split()[-1])


def memory(args) -> list[dict]:
    """Peak resident memory of whole `mnist train` runs (two epochs of each shipped Fashion-MNIST config on
    the full data, then the test and the run folder; two, as cnn_fashion's warm-up takes one), beside Keras
    `model.fit` processes on the same data (the classic CNN's raced epoch with validation and test; the MLP's
    and fast CNN's models fed the way the Keras guides feed them, float32 arrays through tf.data) and a process
    that only imports TensorFlow."""
    base = peak_mb([sys.executable, "-c", "import tensorflow"])
    rows = [{"process": "python -c 'import tensorflow'", "peak MB": round(base), "/ import": 1.0}]

    def row(name: str, command: list[str]) -> None:
        peak = peak_mb(command)
        rows.append({"process": name, "peak MB": round(peak), "/ import": round(peak / base, 2)})

    with tempfile.TemporaryDirectory() as out:
        for config in MEMORY_CONFIGS:
            row(f"mnist train --config configs/{config}.yaml --epochs 2",
                [MNIST, "train", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--epochs", "2",
                 "--data-dir", args.data_dir, "--output-dir", out, "--quiet"])
    for config in FIT_MEMORY_CONFIGS:
        row(f"model.fit, {config}'s model, 1 epoch (bench worker)",
            module("train_worker", "--worker", "fit", "--model", config, "--repeats", "0", "--one-epoch",
                   "--data-dir", args.data_dir))
    row("model.fit, classic Keras CNN, 1 epoch + validation + test (race.py)",
        module("race", "--racer", "classic", "--max-epochs", "1", "--target", "1.01", "--data-dir", args.data_dir))
    return rows
