"""Train one model from the same weights on one device and under MirroredStrategy over 2 logical CPU devices;
print the largest differences as JSON: `python tests/mirrored_steps.py MODEL OPTIMIZER [EXAMPLES EPOCHS]`
(OPTIMIZER: adam, sgd or adam+ema).
`python tests/mirrored_steps.py dropout`: the two replicas' dropout masks.

Run in a process of its own: logical devices can only be set before TensorFlow initializes.
"""

from __future__ import annotations

import json
import sys

from conftest import make_digits
from mnist_pipeline import runtime

runtime.prepare_environment()

import keras  # noqa: E402 - after the environment is prepared
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mnist_pipeline.config.schema import DistributeConfig  # noqa: E402
from mnist_pipeline.data.datasets import evaluation_batches, training_batches  # noqa: E402
from mnist_pipeline.distribute import create_strategy  # noqa: E402
from mnist_pipeline.models.registry import build_model  # noqa: E402
from mnist_pipeline.trainer import Trainer, make_optimizer  # noqa: E402

MODELS = {  # batch norm (synchronized under the strategy) and L2 penalties; no dropout, whose masks differ
    "cnn": dict(filters=[4, 8], convs_per_block=1, dense_units=16, dropout_rate=0.0, dense_dropout_rate=0.0,
                batch_norm=True, l2=1e-3),
    "deep_mlp": dict(units=[32, 16], dropout_rate=0.0, batch_norm=True, l2=1e-3),
}


def data(n, seed):
    x, y = make_digits(n, seed)
    return (x[..., None] / 255).astype(np.float32), y.astype(np.int32)


def train(strategy, name: str, optimizer: str, initial, examples: int = 256, epochs: int = 2):
    keras.utils.set_random_seed(0)
    (x, y), (xv, yv), (xt, yt) = data(examples, 1), data(70, 2), data(90, 3)  # 70 and 90: partial last batches
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(name, **MODELS[name])
        trainer = Trainer(model, _optimizer(optimizer), 32,
                          steps_per_execution=3, label_smoothing=0.1, strategy=strategy)
    if initial is not None:
        model.set_weights(initial)
    start = [w.copy() for w in model.get_weights()]
    batches = training_batches(x, y, 32, seed=0, strategy=strategy)
    fit = trainer.fit(batches, evaluation_batches(xv, yv, 32, strategy), epochs)
    test = trainer.test(evaluation_batches(xt, yt, 32, strategy), probabilities=True)
    history = [[r.loss, r.accuracy, r.val_loss, r.val_accuracy] for r in fit.history]
    return start, model.get_weights(), history, test


def _optimizer(name: str):
    """adam, sgd, or adam+ema: Adam with decoupled weight decay and a moving average of the weights, which
    validation swaps in and out of the mirrored variables."""
    if name == "adam+ema":
        return make_optimizer("adam", 0.01, 0.9, weight_decay=0.05, ema=0.9)
    return make_optimizer(name, 0.01 if name == "adam" else 0.1, 0.9)


def mirrored_over_two_cpus():
    """The strategy `mnist train` makes for training.distribute.devices = [CPU:0, CPU:1]."""
    strategy, _ = create_strategy(DistributeConfig(strategy="mirrored", devices=("CPU:0", "CPU:1")), 32, "cpu")
    return strategy


def dropout_masks() -> dict:
    from mnist_pipeline.models.blocks import dropout

    mirrored = mirrored_over_two_cpus()
    with mirrored.scope():
        layer = dropout(0.5)
        layer.build((64, 64))
    masks = mirrored.run(tf.function(lambda: layer(tf.ones((64, 64)), training=True)))
    first, second = (m.numpy() > 0 for m in mirrored.experimental_local_results(masks))
    states = [s.numpy() for s in mirrored.experimental_local_results(layer.seed_generator.state.value)]
    return {"layer": type(layer).__name__, "masks_differ": bool((first != second).any()),
            "kept": float((first.mean() + second.mean()) / 2), "states_equal": bool((states[0] == states[1]).all())}


def main() -> None:
    if sys.argv[1] == "dropout":
        print(json.dumps(dropout_masks()))
        return
    name, optimizer = sys.argv[1], sys.argv[2]
    examples, epochs = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (256, 2)
    mirrored = mirrored_over_two_cpus()  # before anything runs: logical devices are fixed at initialization
    tf.config.experimental.enable_op_determinism()
    start, single, single_history, single_test = train(None, name, optimizer, None, examples, epochs)
    _, distributed, distributed_history, distributed_test = train(mirrored, name, optimizer, start, examples, epochs)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single, start, strict=True))
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "weights_moved": moved,  # how far one device's training moved the weights: the scale of the test
        "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(single, distributed, strict=True)),
        "history": float(np.max(np.abs(np.array(single_history) - np.array(distributed_history)))),
        "test_loss": abs(single_test[0] - distributed_test[0]),
        "test_accuracy": abs(single_test[1] - distributed_test[1]),
        "test_rows": [len(single_test[2]), len(distributed_test[2])],
        "probabilities": float(np.max(np.abs(single_test[2] - distributed_test[2]))),
    }))


if __name__ == "__main__":
    main()
