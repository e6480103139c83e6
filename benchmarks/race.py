"""Time to a test accuracy: the classic Keras CNN under `model.fit` vs a shipped config under our trainer.

The classic model is the Keras example's (conv 32 -> pool -> conv 64 -> pool -> dropout 0.5 -> dense 10,
Adam, batch 128). Both racers train on the same split (the pipeline's, from the config's seed), validate on
it every epoch, and run in their own process. After every epoch the clock stops while the 10,000 test images
are scored; a racer finishes at the first epoch whose test accuracy reaches the target. The clock counts
training and per-epoch validation, not data loading, model building or the test passes.

Usage (bench.py runs it): python benchmarks/race.py --racer classic|classic-same|ours --config cnn_fashion_fast
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RACERS = ["ours", "classic", "classic-same"]


class Finished(Exception):
    """Raised from the per-epoch callback once the target is reached."""


def _config(args):
    from mnist_pipeline.config import load_config

    return load_config(ROOT / "configs" / f"{args.config}.yaml", [f"data.data_dir={args.data_dir}", *args.set])


def _classic(args) -> list[dict]:
    # "classic" gets TensorFlow's defaults, as a Keras user does; "classic-same" our runtime settings too.
    if args.racer == "classic-same":
        from mnist_pipeline import runtime

        runtime.prepare_environment()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from mnist_pipeline import training_setup

    cfg = _config(args)
    keras.utils.set_random_seed(cfg.training.seed)
    _, splits = training_setup.load_data(cfg)  # the split ours trains on (data only: no runtime settings)
    x_test = splits.inputs(splits.x_test)  # model.fit takes the normalized float32 arrays
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dropout(0.5), keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    epochs: list[dict] = []

    class Clock(keras.callbacks.Callback):
        elapsed = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after fit's validation pass
            Clock.elapsed += time.perf_counter() - self.start
            accuracy = model.evaluate(x_test, splits.y_test, batch_size=512, verbose=0)[1]
            epochs.append({"epoch": epoch + 1, "seconds": round(Clock.elapsed, 2), "test_accuracy": accuracy})
            if accuracy >= args.target:
                self.model.stop_training = True

    model.fit(splits.inputs(splits.x_train), splits.y_train, batch_size=128, epochs=args.max_epochs, verbose=0,
              validation_data=(splits.inputs(splits.x_val), splits.y_val), callbacks=[Clock()])
    return epochs


def _ours(args) -> list[dict]:
    from mnist_pipeline import startup, training_setup
    from mnist_pipeline.data.datasets import evaluation_batches

    cfg = _config(args)
    startup.start_runtime(cfg)
    _, splits = training_setup.load_data(cfg)
    setup = training_setup.build_training(cfg, splits)
    trainer, training = setup.trainer, cfg.training
    test_data = evaluation_batches(splits.x_test, splits.y_test, 512, normalization=splits.normalization)
    epochs: list[dict] = []
    clock = {"elapsed": 0.0, "start": time.perf_counter()}

    def on_epoch(record, state):
        clock["elapsed"] += time.perf_counter() - clock["start"]
        _, accuracy = trainer.test(test_data)
        epochs.append({"epoch": record.epoch, "seconds": round(clock["elapsed"], 2), "test_accuracy": accuracy})
        if accuracy >= args.target:
            raise Finished
        clock["start"] = time.perf_counter()

    with contextlib.suppress(Finished):
        trainer.fit(setup.batches, setup.val_data,
                    min(training.epochs, args.max_epochs), schedule=setup.schedule,
                    early_stopping=setup.early_stopping, on_epoch=on_epoch)
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racer", choices=RACERS, required=True)
    parser.add_argument("--config", default="cnn_fashion_fast", help="config under configs/ (ours; also the split)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--max-epochs", type=int, default=20)
    args = parser.parse_args()
    epochs = _ours(args) if args.racer == "ours" else _classic(args)
    reached = next((e for e in epochs if e["test_accuracy"] >= args.target), None)
    print(json.dumps({"racer": args.racer, "config": args.config, "target": args.target, "epochs": epochs,
                      "seconds_to_target": reached["seconds"] if reached else None,
                      "epochs_to_target": reached["epoch"] if reached else None}))


if __name__ == "__main__":
    main()
