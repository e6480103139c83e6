"""`CNN`: conv blocks with pooling and dropout, a Dense head, and training-only augmentation."""

from __future__ import annotations

import keras

from mnist_pipeline.models.blocks import conv_block, dense_block, dropout, logits_layer, run_layers
from mnist_pipeline.shapes import NUM_CLASSES


def _head(dense_units: int, dropout_rate: float, shared: dict) -> list[keras.layers.Layer]:
    """The layers between the flattened features and the logits: a hidden Dense block, or only dropout."""
    if dense_units:
        return dense_block(dense_units, dropout_rate=dropout_rate, **shared)
    return [dropout(dropout_rate)] if dropout_rate else []


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class CNN(keras.Model):
    """Arguments are `config.CNNParams`. Input (batch, 28, 28, 1), output (batch, 10) logits.

    Augmentation is not part of the model: it is a data transform (`data.augment`), run in tf.data.
    """

    def __init__(self, *, filters, convs_per_block, kernel_size, padding="same", dense_units, activation, dropout_rate,
                 dense_dropout_rate, batch_norm, l1, l2, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.hyperparameters = dict(
            filters=list(filters),
            convs_per_block=convs_per_block if isinstance(convs_per_block, int) else list(convs_per_block),
            kernel_size=kernel_size, padding=padding,
            dense_units=dense_units, activation=activation, dropout_rate=dropout_rate,
            dense_dropout_rate=dense_dropout_rate, batch_norm=batch_norm, l1=l1, l2=l2,
            kernel_initializer=kernel_initializer)
        shared = dict(activation=activation, batch_norm=batch_norm, l1=l1, l2=l2,
                      kernel_initializer=kernel_initializer)
        counts = [convs_per_block] * len(filters) if isinstance(convs_per_block, int) else list(convs_per_block)
        # conv blocks: (batch, 28, 28, 1) -> (batch, 28 / 2**blocks, same, filters[-1]) ('same' padding; 'valid'
        # trims each conv's border first); then flatten,
        # the Dense head (if any) and (batch, 10) logits
        self.stack = [
            *(layer for f, convs in zip(filters, counts, strict=True)
              for layer in conv_block(f, convs=convs, kernel_size=kernel_size, padding=padding,
                                      dropout_rate=dropout_rate, **shared)),
            keras.layers.Flatten(),
            *_head(dense_units, dense_dropout_rate, shared),
            logits_layer(NUM_CLASSES, l1=l1, l2=l2, kernel_initializer=kernel_initializer),
        ]

    def call(self, x, training=False):
        return run_layers(self.stack, x, training)

    def get_config(self):
        return {**super().get_config(), **self.hyperparameters}
