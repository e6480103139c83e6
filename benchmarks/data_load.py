"""The time to load and prepare the full dataset (IDX .gz -> normalized splits), each in a fresh process
(`python -m benchmarks.data_load DATA_DIR` prints its seconds, imports included)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from benchmarks.processes import ROOT, module


def load_seconds(data_dir: str | None) -> float | None:
    if not data_dir:
        return None
    runs = [float(subprocess.run(module("data_load", data_dir), capture_output=True, text=True, cwd=ROOT)
                  .stdout.split()[-1]) for _ in range(3)]
    return statistics.median(runs)


def main(data_dir: str) -> None:
    start = time.perf_counter()
    from mnist_pipeline.data.prepare import prepare_splits
    from mnist_pipeline.data.sources import load_raw

    raw = load_raw("mnist", data_dir)
    prepare_splits(raw, validation_split=0.1, subset=None, normalization="scale", seed=0)
    print(time.perf_counter() - start)


if __name__ == "__main__":
    main(sys.argv[1])
