"""`CNN`: conv blocks with pooling and dropout, a Dense head, and training-only augmentation."""

from __future__ import annotations

import keras

from mnist_pipeline.models.blocks import conv_block, dense_block, logits_layer, run_layers

NUM_CLASSES = 10


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class CNN(keras.Model):
    """Arguments are `config.CNNParams`. Input (batch, 28, 28, 1), output (batch, 10) logits.

    Augmentation is not part of `call`: `make_augmentation()` returns the layers to map over the
    *training* dataset only. On CPU that runs in tf.data, overlapped with the step, and it keeps the step
    XLA-compilable (Keras's random image layers have no XLA kernel).
    """

    def __init__(self, *, filters, convs_per_block, kernel_size, dense_units, activation, dropout_rate,
                 dense_dropout_rate, batch_norm, l1, l2, kernel_initializer, rotation, translation, zoom,
                 horizontal_flip, **kwargs):
        super().__init__(**kwargs)
        self.hyperparameters = dict(
            filters=list(filters), convs_per_block=convs_per_block, kernel_size=kernel_size,
            dense_units=dense_units, activation=activation, dropout_rate=dropout_rate,
            dense_dropout_rate=dense_dropout_rate, batch_norm=batch_norm, l1=l1, l2=l2,
            kernel_initializer=kernel_initializer, rotation=rotation, translation=translation, zoom=zoom,
            horizontal_flip=horizontal_flip)
        shared = dict(activation=activation, batch_norm=batch_norm, l1=l1, l2=l2,
                      kernel_initializer=kernel_initializer)
        # conv blocks: (batch, 28, 28, 1) -> (batch, 28 / 2**blocks, same, filters[-1]); then flatten,
        # the Dense head and (batch, 10) logits
        self.stack = [
            *(layer for f in filters for layer in conv_block(f, convs=convs_per_block, kernel_size=kernel_size,
                                                             dropout_rate=dropout_rate, **shared)),
            keras.layers.Flatten(),
            *dense_block(dense_units, dropout_rate=dense_dropout_rate, **shared),
            logits_layer(NUM_CLASSES, l1=l1, l2=l2, kernel_initializer=kernel_initializer),
        ]

    def call(self, x, training=False):
        return run_layers(self.stack, x, training)

    def make_augmentation(self, seed: int) -> keras.layers.Pipeline | None:
        """Random rotation / translation / zoom / flips for training images, or None when all are off."""
        hp = self.hyperparameters
        layers = []
        # fill_mode="constant" with 0: MNIST's background is 0 after scaling; reflecting would copy strokes.
        if hp["rotation"]:
            layers.append(keras.layers.RandomRotation(hp["rotation"], fill_mode="constant", seed=seed))
        if hp["translation"]:
            layers.append(keras.layers.RandomTranslation(hp["translation"], hp["translation"],
                                                         fill_mode="constant", seed=seed + 1))
        if hp["zoom"]:
            layers.append(keras.layers.RandomZoom(hp["zoom"], fill_mode="constant", seed=seed + 2))
        if hp["horizontal_flip"]:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 3))
        return keras.layers.Pipeline(layers) if layers else None

    def get_config(self):
        return {**super().get_config(), **self.hyperparameters}
