"""Layer stacks the models share: a dense block and a conv block built from the same knobs."""

from __future__ import annotations

import keras


def weight_penalty(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    # The penalty lands in `model.losses`, which the train step adds to the loss it minimizes.
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def dense_block(units: int, *, activation: str, dropout_rate: float, batch_norm: bool,
                l1: float, l2: float, kernel_initializer: str) -> list[keras.layers.Layer]:
    """Dense -> [BatchNorm] -> activation -> [Dropout]."""
    layers = [keras.layers.Dense(units, use_bias=not batch_norm,  # BN's beta replaces the bias
                                 kernel_initializer=kernel_initializer, kernel_regularizer=weight_penalty(l1, l2))]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Activation(activation))
    if dropout_rate:
        layers.append(keras.layers.Dropout(dropout_rate))
    return layers


def conv_block(filters: int, *, convs: int, kernel_size: int, activation: str, dropout_rate: float,
               batch_norm: bool, l1: float, l2: float, kernel_initializer: str) -> list[keras.layers.Layer]:
    """(Conv -> [BatchNorm] -> activation) x convs -> 2x2 max-pool -> [Dropout]; halves height and width."""
    layers: list[keras.layers.Layer] = []
    for _ in range(convs):
        layers.append(keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm,
                                          kernel_initializer=kernel_initializer,
                                          kernel_regularizer=weight_penalty(l1, l2)))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.Activation(activation))
    layers.append(keras.layers.MaxPooling2D(2))
    if dropout_rate:
        layers.append(keras.layers.Dropout(dropout_rate))
    return layers


def logits_layer(num_classes: int, *, l1: float, l2: float, kernel_initializer: str) -> keras.layers.Dense:
    # float32 even under a mixed-precision policy: softmax cross-entropy in float16 loses too much.
    return keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer,
                              kernel_regularizer=weight_penalty(l1, l2), dtype="float32")


def run_layers(layers: list[keras.layers.Layer], x, training: bool):
    for layer in layers:
        x = layer(x, training=training)
    return x


def describe_layers(model: keras.Model, input_shape: tuple[int, ...]) -> list[dict]:
    """Rows (name, type, output shape, parameters) of a model whose `call` runs `model.stack` in order.

    Keras's own summary shows "?" for most output shapes of subclassed models, so walk the stack.
    """
    x = keras.ops.zeros((1, *input_shape))
    rows = []
    for layer in model.stack:
        x = layer(x, training=False)
        rows.append({"name": layer.name, "type": type(layer).__name__,
                     "output_shape": [None, *x.shape[1:]], "parameters": int(layer.count_params())})
    return rows
