"""Perceptrons: `Linear` (no hidden layer: softmax regression), `MLP` (one hidden layer) and `DeepMLP` (several).
Input (batch, 28, 28, 1)."""

from __future__ import annotations

import keras

from mnist_pipeline.models.blocks import dense_block, logits_layer, run_layers
from mnist_pipeline.shapes import NUM_CLASSES


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class DeepMLP(keras.Model):
    """Flatten -> Dense blocks of `units` widths -> 10 logits. Arguments are `config.DeepMLPParams`."""

    def __init__(self, *, units, activation, dropout_rate, batch_norm, l1, l2, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.hyperparameters = dict(units=list(units) if isinstance(units, (list, tuple)) else units,
                                    activation=activation, dropout_rate=dropout_rate, batch_norm=batch_norm,
                                    l1=l1, l2=l2, kernel_initializer=kernel_initializer)
        knobs = dict(activation=activation, dropout_rate=dropout_rate, batch_norm=batch_norm,
                     l1=l1, l2=l2, kernel_initializer=kernel_initializer)
        widths = units if isinstance(units, (list, tuple)) else [units]
        # (batch, 28, 28, 1) -> (batch, 784) -> hidden blocks -> (batch, 10) logits
        self.stack = [keras.layers.Flatten(),
                      *(layer for width in widths for layer in dense_block(width, **knobs)),
                      logits_layer(NUM_CLASSES, l1=l1, l2=l2, kernel_initializer=kernel_initializer)]

    def call(self, x, training=False):
        return run_layers(self.stack, x, training)

    def get_config(self):
        return {**super().get_config(), **self.hyperparameters}


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class MLP(DeepMLP):
    """Flatten -> one hidden Dense of `units` -> 10 logits. Arguments are `config.MLPParams`."""

    def __init__(self, *, units, activation, dropout_rate, batch_norm, l1, l2, kernel_initializer, **kwargs):
        super().__init__(units=int(units), activation=activation, dropout_rate=dropout_rate,
                         batch_norm=batch_norm, l1=l1, l2=l2, kernel_initializer=kernel_initializer, **kwargs)


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class Linear(DeepMLP):
    """Flatten -> 10 logits: softmax regression, each class scored by one 28x28 weight template. Arguments are
    `config.LinearParams`."""

    def __init__(self, *, l1, l2, kernel_initializer, **kwargs):
        super().__init__(units=(), activation="linear", dropout_rate=0.0, batch_norm=False, l1=l1, l2=l2,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.hyperparameters = dict(l1=l1, l2=l2, kernel_initializer=kernel_initializer)
