"""Worker: one trainer on one shipped config in a process of its own, its training throughput as one line of
JSON (`python -m benchmarks.train_worker --worker custom --model cnn`), and how the bench starts one.

Our trainer runs with the settings `mnist train` makes; `fit` with TensorFlow's defaults, as a Keras user gets
them, or with the same settings as ours (`fit-same`). Throughput is steady-state: the first repeat (tracing,
warm-up) is dropped, the rest are returned for the median and spread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from benchmarks.processes import ROOT, last_json, module, per_round, run_checked, take_turns

TRAINERS = ["custom", "fit", "fit-same"]


def measure(args) -> dict:
    """The worker: `args.repeats` + 1 timed repeats of `args.steps` steps; images/s of all but the first."""
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
    x, y = training_arrays(args.data_dir)
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
            augmentation = keras_augmentation(ranges)
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
            "steps_per_repeat": steps, "images_per_second": rates, "train_flops_per_image": training_flops(model),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "traces": traces,
            "examples_in_memory": int(len(y))}


def keras_augmentation(ranges):
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


def training_arrays(data_dir: str | None):
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


def training_flops(model) -> int:
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


def run_worker(trainer: str, model: str, augment: bool, repeats: int, args, replicas: int = 1,
                overrides: list[str] = ()) -> dict:
    command = module("train_worker", "--worker", trainer, "--model", model, "--repeats", str(repeats),
                     "--replicas", str(replicas)) + (
        ["--steps", str(args.steps)] if args.steps else []) + (["--augment"] if augment else []) + [
        f"--set={item}" for item in [*args.set, *overrides]] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    return last_json(run_checked(command, "bench worker failed"))


def under_settings(model: str, settings: dict[str, tuple[int, list[str]]], args) -> dict[str, list[dict]]:
    """Our trainer on the shipped config under each setting (replicas, extra KEY=VALUE overrides), without
    augmentation, in args.rounds rounds of one process per setting, the order rotating as the trainers' does:
    every process's result, per setting."""
    repeats = per_round(args.repeats, args.rounds)

    def measure_one(name: str) -> dict:
        replicas, overrides = settings[name]
        return run_worker("custom", model, False, repeats, args, replicas, overrides)
    return take_turns(list(settings), args.rounds, measure_one)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The options a worker reads; bench.py takes them too, and passes them on."""
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--replicas", type=int, default=1, help="worker: train under MirroredStrategy over this "
                                                                 "many logical CPU devices")
    parser.add_argument("--repeats", type=int, default=12, help="measured repeats per trainer, over all rounds")
    parser.add_argument("--steps", type=int, help="training steps per repeat (default: 20 for the CNN, "
                                                  "an epoch for the MLP)")
    parser.add_argument("--one-epoch", action="store_true", help="worker: a repeat is one epoch of the data")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the shipped config for both trainers (repeatable)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=TRAINERS, required=True)
    parser.add_argument("--data-dir")
    add_worker_options(parser)
    print(json.dumps(measure(parser.parse_args())))


if __name__ == "__main__":
    main()
