"""Start-up: command to the end of the first group of steps of `mnist train`, and `mnist predict` of one PNG,
beside `import tensorflow`, processes taking turns."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.processes import MNIST, ROOT, command_seconds, run_checked, run_folder


def first_step_seconds(config: str, args, out: str) -> tuple[float, str]:
    """Seconds from starting `mnist train --config configs/<config>.yaml` to the end of its first group of
    steps (metrics.json's first_step_at), and the run folder (one short epoch on 2,000 images)."""
    command = [MNIST, "train", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--epochs", "1",
               "--set", "data.subset=2000", "--set", "training.schedule.warmup_epochs=0", "--output-dir", out,
               "--quiet", *(["--data-dir", args.data_dir] if args.data_dir else [])]
    start = time.time()
    run_dir = run_folder(run_checked(command))
    return json.loads((Path(run_dir) / "metrics.json").read_text())["first_step_at"] - start, run_dir


def startup(args) -> list[dict]:
    """Command-to-first-step of mlp.yaml and cnn.yaml and `mnist predict` of one PNG, beside `import tensorflow`
    in the same run; each the median of args.rounds processes, taking turns."""
    import numpy as np
    from PIL import Image

    seconds: dict[str, list[float]] = {"python -c 'import tensorflow'": [], "mnist train mlp.yaml: first step": [],
                                       "mnist train cnn.yaml: first step": [], "mnist predict RUN one.png": []}
    with tempfile.TemporaryDirectory() as out:
        png = Path(out) / "one.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(png)
        run_dir = None
        for _ in range(args.rounds):
            seconds["python -c 'import tensorflow'"].append(command_seconds([sys.executable, "-c",
                                                                              "import tensorflow"], repeats=1))
            for config in ("mlp", "cnn"):
                first, run_dir = first_step_seconds(config, args, out)
                seconds[f"mnist train {config}.yaml: first step"].append(first)
            seconds["mnist predict RUN one.png"].append(command_seconds([MNIST, "predict", run_dir, str(png)],
                                                                         repeats=1))
    base = statistics.median(seconds["python -c 'import tensorflow'"])
    return [{"command": name, "seconds": round(statistics.median(values), 2),
             "/ import": round(statistics.median(values) / base, 2), "spread": [round(min(values), 2),
                                                                                 round(max(values), 2)]}
            for name, values in seconds.items()]
