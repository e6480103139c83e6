"""`make bench`: our custom-step trainer vs Keras `model.fit` on the identical model, side by side in one run.

Every training measurement runs in its own process (so peak resident memory is that trainer's alone) on the
same data, model and batch size. Throughput is steady-state: the first repeat of each process (tracing,
warm-up) is dropped, the rest give the median and spread. This VM's speed drifts by up to 2x over minutes,
so the trainers take turns: several rounds of one process each, the order rotating, their repeats pooled.
Also measured in the same run: the machine's fp32 matmul ceiling through TensorFlow, each model's training
FLOPs per image (counted from layer shapes), the time to load and prepare the full dataset, and
`mnist --help` beside `import tensorflow`; our trainer under float32 vs mixed_bfloat16; the peak resident
memory of whole `mnist train` runs beside a process that only imports TensorFlow; and the race to 90% and 93%
Fashion-MNIST test accuracy against the classic Keras CNN under `fit` (benchmarks/race.py).

This file is the entry point only: each measurement is a module of the `benchmarks` package beside it.

Usage: python benchmarks/bench.py [--data-dir DIR] [--repeats 12] [--rounds 3] [--output-dir outputs] [--no-race]
       python benchmarks/bench.py --only tensorboard   (that part alone, ~5 min)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# Run as a script (`python benchmarks/bench.py`), this folder is on sys.path, not the repository root that
# holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import train_worker  # noqa: E402
from benchmarks.data_load import load_seconds  # noqa: E402
from benchmarks.int8_exports import int8_exports  # noqa: E402
from benchmarks.matmul import matmul_ceiling  # noqa: E402
from benchmarks.memory import memory  # noqa: E402
from benchmarks.precision import precision, shipped_vs_float32  # noqa: E402
from benchmarks.processes import MNIST, command_seconds  # noqa: E402
from benchmarks.replicas import replicas  # noqa: E402
from benchmarks.report import machine, write_report  # noqa: E402
from benchmarks.serve_load import serve_load  # noqa: E402
from benchmarks.startup import startup  # noqa: E402
from benchmarks.tensorboard_cost import tensorboard_cost  # noqa: E402
from benchmarks.time_to_accuracy import race  # noqa: E402
from benchmarks.trainer_vs_fit import VARIANTS, run_variant, table_rows  # noqa: E402
from benchmarks.trust_cost import trust_cost  # noqa: E402

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
PARTS = {"tensorboard": tensorboard_cost, "startup": startup, "shipped": shipped_vs_float32,  # --only
         "trust": trust_cost, "int8": int8_exports, "serve": serve_load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=train_worker.TRAINERS)
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR") or (
        DEFAULT_DATA if Path(DEFAULT_DATA).is_dir() else None))
    train_worker.add_worker_options(parser)
    parser.add_argument("--rounds", type=int, default=3, help="processes per trainer, taking turns")
    parser.add_argument("--output-dir", default="outputs")
    parser.add_argument("--models", default="mlp,cnn", help="which of mlp,cnn to measure")
    parser.add_argument("--no-race", dest="race", action="store_false",
                        help="skip the race to 90%% and 93%% test accuracy (it needs --data-dir with Fashion-MNIST)")
    parser.add_argument("--only", choices=list(PARTS), help="measure only this part")
    args = parser.parse_args()
    if args.worker:  # as `python -m benchmarks.train_worker` does
        print(json.dumps(train_worker.measure(args)))
        return

    started = time.perf_counter()
    where = machine()
    if args.only:
        write_report({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": where,
                      "data_dir": args.data_dir, "rounds": args.rounds, args.only: PARTS[args.only](args),
                      "bench_seconds": round(time.perf_counter() - started, 1)}, args.output_dir)
        return
    # This VM's speed flips by up to 2x from minute to minute: sample the ceiling before and after every
    # variant and keep the highest, so that "% of ceiling" is never flattered by a slow moment.
    ceilings = [matmul_ceiling()]
    results = []
    for model, augment in VARIANTS:
        if model not in args.models.split(","):
            continue
        results.append(run_variant(model, augment, args))
        ceilings.append(matmul_ceiling())
    ceiling = max(ceilings)
    help_seconds = command_seconds([MNIST, "--help"])
    import_seconds = command_seconds([sys.executable, "-c", "import tensorflow"])
    load = load_seconds(args.data_dir)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": where,
        "data_dir": args.data_dir, "repeats": args.repeats, "rounds": args.rounds, "matmul_gflops": round(ceiling, 1),
        "matmul_gflops_samples": [round(c, 1) for c in ceilings],
        "help_seconds": round(help_seconds, 3), "import_tensorflow_seconds": round(import_seconds, 3),
        "help_over_import": round(help_seconds / import_seconds, 3),
        "load_and_prepare_seconds": None if load is None else round(load, 3),
        "rows": table_rows(results, ceiling),
        "replicas": [replicas(model, args) for model in args.models.split(",")],
        "precision": [precision(model, args) for model in args.models.split(",")],
        "shipped": shipped_vs_float32(args), "startup": startup(args),
        "memory": memory(args) if args.data_dir else None, "tensorboard": tensorboard_cost(args),
        "trust": trust_cost(args), "int8": int8_exports(args), "serve": serve_load(args),
        "race": race(args) if args.race and args.data_dir else None, "raw": results,
    }
    report["bench_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, args.output_dir)


if __name__ == "__main__":
    main()
