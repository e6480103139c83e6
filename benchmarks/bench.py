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

Usage: python benchmarks/bench.py [--data-dir DIR] [--repeats 12] [--rounds 3] [--output-dir outputs] [--no-race]
       python benchmarks/bench.py --only tensorboard   (that part alone, ~5 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(Path(sys.executable).parent / "mnist")  # this environment's console script
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
TRAINERS = ["custom", "fit", "fit-same"]
VARIANTS = [  # (model config, augmentation on?)
    ("mlp", False),
    ("mlp", True),
    ("cnn", False),
    ("cnn", True),
]


# ---------------------------------------------------------------- worker side (one trainer per process)

def _worker(args) -> dict:
    # Our trainer runs with the settings `mnist train` makes (runtime.prepare_environment: oneDNN kernels on);
    # `fit` with TensorFlow's defaults, as a Keras user gets them, or with the same settings ("fit-same").
    from mnist_pipeline import hardware, runtime

    if args.worker == "fit":
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    else:
        runtime.prepare_environment()
    import keras
    import tensorflow as tf

    from mnist_pipeline.config import load_config
    from mnist_pipeline.data.augment import Augmentation
    from mnist_pipeline.data.datasets import training_batches
    from mnist_pipeline.distribute import create_strategy
    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.trainer import Trainer, make_optimizer

    overrides = args.set + ([] if args.replicas == 1 else [  # MirroredStrategy over logical CPU devices
        "training.distribute.strategy=mirrored",
        f"training.distribute.devices=[{','.join(f'CPU:{i}' for i in range(args.replicas))}]"])
    cfg = load_config(ROOT / "configs" / f"{args.model}.yaml", overrides)
    strategy, _ = create_strategy(cfg.training.distribute, cfg.training.batch_size, "cpu")
    # `auto` settings resolved as `mnist train` resolves them for the config's own full run, for either trainer.
    cpu = runtime.cpu()
    precision = hardware.resolve_precision(cfg.training.compute_precision, "cpu", cpu,
                                           convolutional=cfg.model.name == "cnn")
    x, y = _training_arrays(args.data_dir)
    jit_compile, _ = hardware.resolve_jit_compile(cfg.training.jit_compile, cfg.model.name, cfg.model.params,
                                                  cfg.planned_steps(len(y)))
    keras.mixed_precision.set_global_policy(precision.policy)
    keras.utils.set_random_seed(0)
    batch = cfg.training.batch_size
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(cfg.model.name, **cfg.model.params)
        optimizer = make_optimizer(cfg.training.optimizer, cfg.training.learning_rate, cfg.training.momentum)
    ranges = cfg.data.augmentation
    seconds: list[float] = []
    # An MLP step takes ~1 ms: a repeat of a few steps would time the per-call overhead, not training.
    steps = len(y) // batch if args.one_epoch else args.steps or (len(y) // batch if cfg.model.name == "mlp" else 20)

    if args.worker == "custom":
        with (strategy or tf.distribute.get_strategy()).scope():
            trainer = Trainer(model, optimizer, batch, jit_compile=jit_compile,
                              steps_per_execution=cfg.training.steps_per_execution, strategy=strategy)
        augmentation = Augmentation.from_config(ranges) if args.augment else None
        batches = training_batches(x, y, batch, seed=0, augmentation=augmentation, jit_compile=trainer.jit_compile,
                                   strategy=strategy)
        group, size = trainer.compile_group(batches), cfg.training.steps_per_execution
        # Epochs begin and are read to their end as in Trainer.fit, which times them with its bookkeeping.
        epoch, feed, left_in_epoch = -1, None, 0
        for _ in range(args.repeats + 1):
            start, done = time.perf_counter(), 0
            while done < steps:
                if not left_in_epoch:
                    epoch, left_in_epoch = epoch + 1, batches.steps_per_epoch
                    feed = trainer.begin_epoch(batches, epoch, [cfg.training.learning_rate])
                count = len(group(feed, min(size, steps - done, left_in_epoch)))
                done, left_in_epoch = done + count, left_in_epoch - count
            seconds.append(time.perf_counter() - start)
        traces = group.traces
    else:  # fit and fit-same
        model.compile(optimizer=optimizer, jit_compile=jit_compile, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).repeat()
        ds = ds.batch(batch, drop_remainder=True)
        if args.augment:  # the same ranges through Keras's layers, the way the Keras guides map them
            augmentation = _keras_augmentation(ranges)
            ds = ds.map(lambda a, b: (augmentation(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(time.perf_counter() - self.start)

        model.fit(ds, epochs=args.repeats + 1, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
        traces = None
    rates = [steps * batch / s for s in seconds[1:]]  # first repeat: tracing and warm-up
    return {"trainer": args.worker, "model": args.model, "augment": args.augment, "batch_size": batch,
            "precision": precision.policy, "jit_compile": jit_compile,
            "replicas": args.replicas,
            "steps_per_repeat": steps, "images_per_second": rates, "train_flops_per_image": _training_flops(model),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "traces": traces,
            "examples_in_memory": int(len(y))}


def _keras_augmentation(ranges):
    import keras

    layers = []
    if ranges.rotation:
        layers.append(keras.layers.RandomRotation(ranges.rotation, fill_mode="constant", seed=1))
    if ranges.translation:
        layers.append(keras.layers.RandomTranslation(ranges.translation, ranges.translation,
                                                     fill_mode="constant", seed=2))
    if ranges.zoom:
        layers.append(keras.layers.RandomZoom(ranges.zoom, fill_mode="constant", seed=3))
    if ranges.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=4))
    if ranges.erasing:  # a (p, p) factor: erase with probability p, as ours does
        layers.append(keras.layers.RandomErasing((ranges.erasing, ranges.erasing), scale=(0.02, 0.4),
                                                 fill_value=0.0, value_range=(0, 1), seed=5))
    return keras.layers.Pipeline(layers)


def _training_arrays(data_dir: str | None):
    import numpy as np

    from mnist_pipeline.data.prepare import fit_normalization
    from mnist_pipeline.data.sources import load_raw

    if data_dir:
        raw = load_raw("mnist", data_dir)
        images, labels = raw.x_train, raw.y_train
    else:  # no data here: random pixels cost the same to train on
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000)
    return fit_normalization(images, "scale").apply(images), labels.astype(np.int32)


def _training_flops(model) -> int:
    """Training FLOPs per image, counted from layer shapes: 2 x multiply-adds of each Conv2D / Dense forward,
    the same again for its weight gradient and again for its input gradient, except the first layer's
    (nothing needs the gradient of the images). Elementwise ops (activations, BN, pooling) are not counted."""
    import keras

    x = keras.ops.zeros((1, 28, 28, 1))
    total, first = 0, True
    for layer in model.stack:
        inputs, x = x, layer(x, training=False)
        if isinstance(layer, keras.layers.Dense):
            forward = 2 * int(inputs.shape[-1]) * int(x.shape[-1])
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            forward = 2 * kh * kw * int(inputs.shape[-1]) * int(x.shape[-1]) * int(x.shape[1]) * int(x.shape[2])
        else:
            continue
        total += forward * (2 if first else 3)
        first = False
    return total


# ---------------------------------------------------------------- driver side

def _run_worker(trainer: str, model: str, augment: bool, repeats: int, args, replicas: int = 1,
                overrides: list[str] = ()) -> dict:
    command = [sys.executable, __file__, "--worker", trainer, "--model", model, "--repeats", str(repeats),
               "--replicas", str(replicas)] + (
        ["--steps", str(args.steps)] if args.steps else []) + (["--augment"] if augment else []) + [
        f"--set={item}" for item in [*args.set, *overrides]] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bench worker failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _run_variant(model: str, augment: bool, args) -> dict:
    """Each trainer measured in args.rounds processes, taking turns (the order rotates every round), so a slow
    spell of the VM falls on all of them alike; repeats pooled, peak memory the highest of any process."""
    per_round = -(-args.repeats // args.rounds)
    runs: dict[str, list[dict]] = {trainer: [] for trainer in TRAINERS}
    for round_ in range(args.rounds):
        order = TRAINERS[round_ % len(TRAINERS):] + TRAINERS[:round_ % len(TRAINERS)]
        for trainer in order:
            runs[trainer].append(_run_worker(trainer, model, augment, per_round, args))
    pooled = {}
    for trainer, results in runs.items():
        rates = _rates(results)
        pooled[trainer] = {**results[0], "images_per_second": rates, "median": statistics.median(rates),
                           "spread": [min(rates), max(rates)], "processes": len(results),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                           "traces": None if trainer != "custom" else max(r["traces"] for r in results)}
    return pooled


def _taking_turns(model: str, settings: dict[str, tuple[int, list[str]]], args) -> dict[str, list[dict]]:
    """Our trainer on the shipped config under each setting (replicas, extra KEY=VALUE overrides), without
    augmentation, in args.rounds rounds of one process per setting, the order rotating as the trainers' does:
    every process's result, per setting."""
    per_round = -(-args.repeats // args.rounds)
    names = list(settings)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            replicas, overrides = settings[name]
            results[name].append(_run_worker("custom", model, False, per_round, args, replicas, overrides))
    return results


def _rates(results: list[dict]) -> list[float]:
    """images/s of every repeat of these processes, pooled."""
    return [rate for result in results for rate in result["images_per_second"]]


def _spread(rates: list[float]) -> list[int]:
    return [round(min(rates)), round(max(rates))]


def _replicas(model: str, args) -> dict:
    """One device vs MirroredStrategy over 2 logical CPU devices (under the strategy XLA is off and batches
    come from tf.data per replica)."""
    rates = {name: _rates(results) for name, results in _taking_turns(model, {"1": (1, []), "2": (2, [])},
                                                                       args).items()}
    one, two = statistics.median(rates["1"]), statistics.median(rates["2"])
    return {"model": model, "1 replica img/s": round(one), "2 replicas img/s": round(two),
            "2 / 1": round(two / one, 2), "spread 1": _spread(rates["1"]), "spread 2": _spread(rates["2"])}


def _precision(model: str, args) -> dict:
    """float32 vs mixed_bfloat16."""
    settings = {p: (1, [f"training.precision={p}"]) for p in ("float32", "mixed_bfloat16")}
    rates = {name: _rates(results) for name, results in _taking_turns(model, settings, args).items()}
    fp32, bf16 = statistics.median(rates["float32"]), statistics.median(rates["mixed_bfloat16"])
    return {"model": model, "float32 img/s": round(fp32), "bfloat16 img/s": round(bf16),
            "bfloat16 / float32": round(bf16 / fp32, 2), "float32 spread": _spread(rates["float32"]),
            "bfloat16 spread": _spread(rates["mixed_bfloat16"])}


def _shipped_vs_float32(args) -> list[dict]:
    """Every shipped config with its shipped (auto) settings against the same config forced to float32, our
    trainer, taking turns: on a CPU without native bfloat16, `auto` must never choose the slower one."""
    rows = []
    for config in SHIPPED_CONFIGS:
        settings = {"shipped": (1, []), "float32": (1, ["training.precision=float32"])}
        results = _taking_turns(config, settings, args)
        rates = {name: _rates(runs) for name, runs in results.items()}
        shipped, fp32 = statistics.median(rates["shipped"]), statistics.median(rates["float32"])
        resolved = results["shipped"][0]  # what the shipped settings resolved to on this machine
        rows.append({"config": config, "shipped precision": resolved["precision"], "jit": resolved["jit_compile"],
                     "shipped img/s": round(shipped), "float32 img/s": round(fp32),
                     "shipped / float32": round(shipped / fp32, 2), "shipped spread": _spread(rates["shipped"]),
                     "float32 spread": _spread(rates["float32"])})
    return rows


SHIPPED_CONFIGS = ["mlp", "deep_mlp", "cnn", "smoke", "mlp_fashion", "deep_mlp_fashion", "cnn_fashion_fast",
                   "cnn_fashion"]


def _first_step_seconds(config: str, args, out: str) -> tuple[float, str]:
    """Seconds from starting `mnist train --config configs/<config>.yaml` to the end of its first group of
    steps (metrics.json's first_step_at), and the run folder (one short epoch on 2,000 images)."""
    command = [MNIST, "train", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--epochs", "1",
               "--set", "data.subset=2000", "--set", "training.schedule.warmup_epochs=0", "--output-dir", out,
               "--quiet", *(["--data-dir", args.data_dir] if args.data_dir else [])]
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bench run failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    run_dir = result.stdout.strip().splitlines()[-1].removeprefix("run folder: ")
    return json.loads((Path(run_dir) / "metrics.json").read_text())["first_step_at"] - start, run_dir


def _startup(args) -> list[dict]:
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
            seconds["python -c 'import tensorflow'"].append(_command_seconds([sys.executable, "-c",
                                                                              "import tensorflow"], repeats=1))
            for config in ("mlp", "cnn"):
                first, run_dir = _first_step_seconds(config, args, out)
                seconds[f"mnist train {config}.yaml: first step"].append(first)
            seconds["mnist predict RUN one.png"].append(_command_seconds([MNIST, "predict", run_dir, str(png)],
                                                                         repeats=1))
    base = statistics.median(seconds["python -c 'import tensorflow'"])
    return [{"command": name, "seconds": round(statistics.median(values), 2),
             "/ import": round(statistics.median(values) / base, 2), "spread": [round(min(values), 2),
                                                                                 round(max(values), 2)]}
            for name, values in seconds.items()]


MEMORY_CONFIGS = ["mlp_fashion", "cnn_fashion_fast", "cnn_fashion"]
FIT_MEMORY_CONFIGS = ["mlp_fashion", "cnn_fashion_fast"]  # the two whose fit epoch is quick


def _peak_mb(command: list[str]) -> float:
    """Peak resident memory of `command`'s process, in MB, read by a parent that runs only it."""
    code = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
            "sys.exit(done.stderr[-2000:]) if done.returncode else print(resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bench run failed: {' '.join(command)}\n{result.stderr}")
    return float(result.stdout.split()[-1])


def _memory(args) -> list[dict]:
    """Peak resident memory of whole `mnist train` runs (two epochs of each shipped Fashion-MNIST config on
    the full data, then the test and the run folder; two, as cnn_fashion's warm-up takes one), beside Keras
    `model.fit` processes on the same data (the classic CNN's raced epoch with validation and test; the MLP's
    and fast CNN's models fed the way the Keras guides feed them, float32 arrays through tf.data) and a process
    that only imports TensorFlow."""
    base = _peak_mb([sys.executable, "-c", "import tensorflow"])
    rows = [{"process": "python -c 'import tensorflow'", "peak MB": round(base), "/ import": 1.0}]

    def row(name: str, command: list[str]) -> None:
        peak = _peak_mb(command)
        rows.append({"process": name, "peak MB": round(peak), "/ import": round(peak / base, 2)})

    with tempfile.TemporaryDirectory() as out:
        for config in MEMORY_CONFIGS:
            row(f"mnist train --config configs/{config}.yaml --epochs 2",
                [MNIST, "train", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--epochs", "2",
                 "--data-dir", args.data_dir, "--output-dir", out, "--quiet"])
    for config in FIT_MEMORY_CONFIGS:
        row(f"model.fit, {config}'s model, 1 epoch (bench worker)",
            [sys.executable, __file__, "--worker", "fit", "--model", config, "--repeats", "0", "--one-epoch",
             "--data-dir", args.data_dir])
    row("model.fit, classic Keras CNN, 1 epoch + validation + test (race.py)",
        [sys.executable, str(ROOT / "benchmarks" / "race.py"), "--racer", "classic", "--max-epochs", "1",
         "--target", "1.01", "--data-dir", args.data_dir])
    return rows


def _tensorboard_cost(args) -> list[dict]:
    """Whole `mnist train` runs of the shipped MLP (the fastest steps, so the most exposed to per-step costs),
    6 epochs, TensorBoard off vs on (default every 10th step's loss, and every step's), taking turns.
    steady s: the training time of epochs 2-6 (history.csv; epoch 1 is mostly XLA compiling), where the
    per-step losses are collected; wall s: the whole run (metrics.json), where the events are written."""

    from mnist_pipeline.reports import run_files

    settings = {"off": ["output.tensorboard.enabled=false"], "on (every 10 steps)": [],
                "on (every step)": ["output.tensorboard.loss_every_steps=1"]}
    seconds: dict[str, dict[str, list[float]]] = {name: {"steady": [], "wall": []} for name in settings}
    names = list(settings)
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                command = [MNIST, "train", "--config", str(ROOT / "configs/mlp.yaml"), "--epochs", "6", "--device",
                           "cpu", "--output-dir", out, *(["--data-dir", args.data_dir] if args.data_dir else []),
                           *[f"--set={item}" for item in settings[name]]]
                result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                if result.returncode != 0:
                    sys.exit(f"bench run failed: {' '.join(command)}\n{result.stderr[-2000:]}")
                run_dir = result.stdout.strip().splitlines()[-1].removeprefix("run folder: ")
                metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
                history = run_files.read_history(Path(run_dir))[1:]  # epoch 1 is mostly XLA compiling
                seconds[name]["steady"].append(sum(row["seconds"] for row in history))
                seconds[name]["wall"].append(metrics["wall_seconds"])
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


# Each target test accuracy and the shipped config that races to it, as shipped (its own epochs and schedule).
RACES = {0.90: "cnn_fashion_fast", 0.93: "cnn_fashion"}


def _race_process(racer: str, config: str, target: float, args) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "race.py"), "--racer", racer, "--config", config,
               "--data-dir", args.data_dir, "--target", str(target)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"race failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _race(args) -> list[dict]:
    """benchmarks/race.py, one process per racer: the classic Keras CNN once, up to the highest target (its
    per-epoch test accuracies give the time to each), and ours once per target with that target's config."""
    classic = _race_process("classic", RACES[min(RACES)], max(RACES), args)
    races = []
    for target, config in RACES.items():
        ours = _race_process("ours", config, target, args)
        reached = next((e for e in classic["epochs"] if e["test_accuracy"] >= target), None)
        theirs = {**classic, "seconds_to_target": reached["seconds"] if reached else None,
                  "epochs_to_target": reached["epoch"] if reached else None}
        seconds = ours["seconds_to_target"]
        # Never reached by the classic CNN: its whole run's time bounds the ratio from above.
        bound = theirs["seconds_to_target"] or classic["epochs"][-1]["seconds"]
        races.append({"target": target, "config": config, "racers": {"ours": ours, "classic": theirs},
                      "ours_over_classic": round(seconds / bound, 2) if seconds else None,
                      "classic_reached": reached is not None})
    return races


def _matmul_ceiling(n: int = 2048, iterations: int = 20) -> float:
    """fp32 GFLOP/s of a large matmul through TensorFlow on this machine: the best of 3, with TensorFlow's
    own (Eigen) kernels and with oneDNN's, so that neither trainer's settings get an easy ceiling."""
    return max(_matmul_gflops(n, iterations, onednn) for onednn in ("0", "1"))


def _matmul_gflops(n: int, iterations: int, onednn: str) -> float:
    code = f"""
import os, time; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
a = tf.random.normal(({n}, {n})); b = tf.random.normal(({n}, {n})) / {n} ** 0.5
@tf.function
def run():
    c = a
    for _ in range({iterations}):  # each product depends on the last: nothing to fold or skip
        c = tf.matmul(c, b)
    return c
run().numpy()
best = min((lambda s: (run().numpy(), time.perf_counter() - s)[1])(time.perf_counter()) for _ in range(3))
print(2 * {n} ** 3 * {iterations} / best / 1e9)
"""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
                 .stdout.split()[-1])


def _command_seconds(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load_seconds(data_dir: str | None) -> float | None:
    if not data_dir:
        return None
    code = ("import time; s = time.perf_counter()\n"
            "from mnist_pipeline.data.sources import load_raw\n"
            "from mnist_pipeline.data.prepare import prepare_splits\n"
            f"raw = load_raw('mnist', {data_dir!r})\n"
            "prepare_splits(raw, validation_split=0.1, subset=None, normalization='scale', seed=0)\n"
            "print(time.perf_counter() - s)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
                  .stdout.split()[-1]) for _ in range(3)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=TRAINERS)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--replicas", type=int, default=1, help="worker: train under MirroredStrategy over this "
                                                                 "many logical CPU devices")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR") or (
        DEFAULT_DATA if Path(DEFAULT_DATA).is_dir() else None))
    parser.add_argument("--repeats", type=int, default=12, help="measured repeats per trainer, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="processes per trainer, taking turns")
    parser.add_argument("--steps", type=int, help="training steps per repeat (default: 20 for the CNN, "
                                                  "an epoch for the MLP)")
    parser.add_argument("--one-epoch", action="store_true", help="worker: a repeat is one epoch of the data")
    parser.add_argument("--output-dir", default="outputs")
    parser.add_argument("--models", default="mlp,cnn", help="which of mlp,cnn to measure")
    parser.add_argument("--no-race", dest="race", action="store_false",
                        help="skip the race to 90%% and 93%% test accuracy (it needs --data-dir with Fashion-MNIST)")
    parser.add_argument("--only", choices=["tensorboard", "startup", "shipped"], help="measure only this part")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the shipped config for both trainers (repeatable)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return

    started = time.perf_counter()
    machine = _machine()
    if args.only:
        part = {"tensorboard": _tensorboard_cost, "startup": _startup, "shipped": _shipped_vs_float32}[args.only]
        _write_report({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
                       "data_dir": args.data_dir, "rounds": args.rounds, args.only: part(args),
                       "bench_seconds": round(time.perf_counter() - started, 1)}, args.output_dir)
        return
    # This VM's speed flips by up to 2x from minute to minute: sample the ceiling before and after every
    # variant and keep the highest, so that "% of ceiling" is never flattered by a slow moment.
    ceilings = [_matmul_ceiling()]
    results = []
    for model, augment in VARIANTS:
        if model not in args.models.split(","):
            continue
        results.append(_run_variant(model, augment, args))
        ceilings.append(_matmul_ceiling())
    ceiling = max(ceilings)
    help_seconds = _command_seconds([MNIST, "--help"])
    import_seconds = _command_seconds([sys.executable, "-c", "import tensorflow"])
    load_seconds = _load_seconds(args.data_dir)
    replicas = [_replicas(model, args) for model in args.models.split(",")]
    precision = [_precision(model, args) for model in args.models.split(",")]
    shipped = _shipped_vs_float32(args)
    startup = _startup(args)
    memory = _memory(args) if args.data_dir else None
    tensorboard = _tensorboard_cost(args)
    race = _race(args) if args.race and args.data_dir else None

    rows = []
    for pair in results:
        custom, fit, same = pair["custom"], pair["fit"], pair["fit-same"]
        flops = custom["train_flops_per_image"]
        rows.append({
            "model": custom["model"], "augmentation": custom["augment"], "batch": custom["batch_size"],
            "precision": custom["precision"],
            "steps/repeat": custom["steps_per_repeat"],
            "custom img/s": round(custom["median"]), "custom spread": [round(v) for v in custom["spread"]],
            "fit img/s": round(fit["median"]), "fit spread": [round(v) for v in fit["spread"]],
            "custom / fit": round(custom["median"] / fit["median"], 2),
            "fit-same img/s": round(same["median"]),
            "custom / fit-same": round(custom["median"] / same["median"], 2),
            "train MFLOP/img": round(flops / 1e6, 2),
            "custom % of ceiling": round(100 * custom["median"] * flops / (ceiling * 1e9), 1),
            "fit % of ceiling": round(100 * fit["median"] * flops / (ceiling * 1e9), 1),
            "custom peak MB": round(custom["peak_rss_mb"]), "fit peak MB": round(fit["peak_rss_mb"]),
            "custom / fit memory": round(custom["peak_rss_mb"] / fit["peak_rss_mb"], 2),
            "custom traces": custom["traces"],
        })
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
        "data_dir": args.data_dir, "repeats": args.repeats, "rounds": args.rounds, "matmul_gflops": round(ceiling, 1),
        "matmul_gflops_samples": [round(c, 1) for c in ceilings],
        "help_seconds": round(help_seconds, 3), "import_tensorflow_seconds": round(import_seconds, 3),
        "help_over_import": round(help_seconds / import_seconds, 3),
        "load_and_prepare_seconds": None if load_seconds is None else round(load_seconds, 3),
        "rows": rows, "replicas": replicas, "precision": precision, "shipped": shipped, "startup": startup,
        "memory": memory, "tensorboard": tensorboard,
        "race": race, "raw": results,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    _write_report(report, args.output_dir)


def _machine() -> dict:
    """The facts a speed figure depends on, printed at the top of the report: CPU model, cores, the flags that
    matter (AVX2, AVX-512, bfloat16, AMX), and a oneDNN setting that keeps bfloat16 from running natively."""
    from mnist_pipeline import runtime

    cpu = runtime.cpu()
    return {"cpu": cpu.describe(), "native_bfloat16": cpu.native_bfloat16,
            "bfloat16_blocked_by": cpu.bfloat16_blocked_by,
            "python": sys.version.split()[0]}


def _write_report(report: dict, output_dir: str) -> None:
    out = ROOT / output_dir / "bench" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=False)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    (out / "bench.md").write_text(markdown)
    print(markdown)
    print(f"bench: {out / 'bench.json'}")


def _tensorboard_section(report: dict) -> list[str]:
    return ["## TensorBoard off vs on (`mnist train --config configs/mlp.yaml --epochs 6`, "
            f"{report['rounds']} runs each, taking turns; medians; steady = epochs 2-6)", "",
            *_table(report["tensorboard"])]


def _table(rows: list[dict]) -> list[str]:
    """Markdown lines of a table of dicts (a [low, high] pair shows as low..high), then a blank line."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f"{v[0]}..{v[1]}" if isinstance(v, list) else str(v)
                                       for v in row.values()) + " |")
    return [*lines, ""]


def _machine_lines(report: dict) -> list[str]:
    machine = report.get("machine") or {}
    blocked = machine.get("bfloat16_blocked_by")
    return [f"Machine: {machine.get('cpu', '?')}; native bfloat16: {machine.get('native_bfloat16', '?')}"
            f"{f' (off: {blocked})' if blocked else ''}; Python {machine.get('python', '?')}", ""]


def _shipped_section(report: dict) -> list[str]:
    return ["## Every shipped config as shipped vs forced to float32 (our trainer, processes taking turns)", "",
            *_table(report["shipped"])]


def _startup_section(report: dict) -> list[str]:
    return ["## Start-up (command to the end of the first group of steps; medians of processes taking turns)", "",
            *_table(report["startup"])]


def _markdown(report: dict) -> str:
    if "rows" not in report:  # --only one part
        sections = {"tensorboard": _tensorboard_section, "startup": _startup_section, "shipped": _shipped_section}
        return "\n".join([f"# Benchmark {report['when']}", "", *_machine_lines(report),
                          f"Data: {report['data_dir']}", "",
                          *(line for key, section in sections.items() if key in report for line in section(report))])
    lines = [f"# Benchmark {report['when']}", "", *_machine_lines(report),
             f"Data: {report['data_dir'] or 'random pixels (no data dir)'}; each trainer: {report['rounds']} "
             f"processes taking turns with the others, {report['repeats']} measured repeats in all (each process's "
             "warm-up repeat dropped); medians, spread = min..max.", "", *_table(report["rows"])]
    lines += [f"- fp32 matmul ceiling through TensorFlow: {report['matmul_gflops']} GFLOP/s (the highest of "
                  f"{report['matmul_gflops_samples']}, sampled between the variants)",
              f"- `mnist --help`: {report['help_seconds']} s; `import tensorflow`: "
              f"{report['import_tensorflow_seconds']} s; ratio {report['help_over_import']}",
              f"- load and prepare the full dataset (IDX .gz -> normalized splits): "
              f"{report['load_and_prepare_seconds']} s",
              f"- whole benchmark: {report['bench_seconds']} s", ""]
    if report.get("replicas"):
        lines += ["## One device vs two replicas (MirroredStrategy over 2 logical CPU devices)", "",
                  "Both replicas share the same 2 cores: each step does the same arithmetic plus an all-reduce "
                  "of the gradients, so this measures the strategy's overhead, not a speed-up.", ""]
        lines += _table(report["replicas"])
    if report.get("tensorboard"):
        lines += _tensorboard_section(report)
    if report.get("precision"):
        lines += ["## float32 vs mixed_bfloat16 (our trainer, shipped config, processes taking turns)", "",
                  *_table(report["precision"])]
    if report.get("shipped"):
        lines += _shipped_section(report)
    if report.get("startup"):
        lines += _startup_section(report)
    if report.get("memory"):
        lines += ["## Peak resident memory of whole processes (full Fashion-MNIST)", "",
                  *_table(report["memory"])]
    for race in report.get("race") or []:
        lines += [f"## Time to {race['target']:.0%} test accuracy (Fashion-MNIST; training + validation seconds)",
                  "", "| racer | epochs | seconds | test accuracy per epoch |", "| --- | --- | --- | --- |"]
        for name, r in race["racers"].items():
            accuracies = ", ".join(f"{e['test_accuracy']:.4f}" for e in r["epochs"])
            lines.append(f"| {name} ({race['config'] if name == 'ours' else 'Keras example CNN, model.fit'}) | "
                         f"{r['epochs_to_target'] or 'not reached'} | {r['seconds_to_target']} | {accuracies} |")
        ratio = race["ours_over_classic"]
        lines += ["", f"- ours / classic time: {ratio}" if race["classic_reached"] else
                  f"- ours / classic time: below {ratio} (the classic CNN never reached it: its whole run's time "
                  f"is the bound)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
