"""Layer stacks the models share: a dense block and a conv block built from the same knobs."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, trained through TensorFlow's fused kernel on (batch, h, w, c) float32 or
    bfloat16 input (statistics, scale and offset stay float32 either way).

    Keras 3 normalizes with separate moments / subtract / scale ops; the fused kernel does it in one pass
    over memory each way, which made the CNN train step ~12% faster on CPU (oneDNN). Inference, any
    other input and synchronized statistics take Keras's own path, so saved models and moving statistics
    mean the same thing.
    """

    def call(self, inputs, training=False, mask=None):
        fusable = (training and self.trainable and mask is None and not self.synchronized and len(inputs.shape) == 4
                   and self.axis in (-1, 3) and inputs.dtype in (tf.float32, tf.bfloat16) and self.scale
                   and self.center)
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        # The fused op hands back the Bessel-corrected variance; Keras tracks the biased one.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], variance.dtype)
        variance = variance * (count - 1) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
        return outputs


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class ReplicaDropout(keras.layers.Dropout):
    """Dropout whose masks differ between the replicas of a tf.distribute strategy.

    Keras's Dropout draws from one mirrored random state, so every replica would drop the same units in its
    slice of the batch (replica 1's example i like replica 0's example i). Folding in the replica's number
    gives each its own masks; the state itself still moves on alike everywhere, so checkpoints hold one.
    """

    def call(self, inputs, training=False):
        if not training or not self.rate:
            return inputs
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.random.experimental.stateless_fold_in(self.seed_generator.next(), replica)
        return tf.nn.experimental.stateless_dropout(inputs, self.rate, seed, noise_shape=self.noise_shape)


def dropout(rate: float) -> keras.layers.Dropout:
    """Keras's Dropout on one device; under a strategy of several replicas, one with masks of its own per
    replica (see ReplicaDropout)."""
    return (ReplicaDropout if _several_replicas() else keras.layers.Dropout)(rate)


def batch_normalization(fused: bool = False) -> keras.layers.BatchNormalization:
    """Batch norm; under a tf.distribute strategy of several replicas, with statistics over the global batch.

    Keras 3 keeps the moving mean and variance as plain mirrored variables that each replica overwrites
    with its own slice's statistics, so the replicas' copies drift apart (and the chief saves one of them).
    Synchronized, every replica computes the same statistics, from the same examples a single device sees.
    """
    return (FusedBatchNormalization if fused else keras.layers.BatchNormalization)(synchronized=_several_replicas())


def _several_replicas() -> bool:
    """Whether the layer is built for a strategy of several replicas (models are built in its scope)."""
    return tf.distribute.get_strategy().num_replicas_in_sync > 1


def weight_penalty(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    # The penalty lands in `model.losses`, which the train step adds to the loss it minimizes.
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def dense_block(units: int, *, activation: str, dropout_rate: float, batch_norm: bool,
                l1: float, l2: float, kernel_initializer: str) -> list[keras.layers.Layer]:
    """Dense -> [BatchNorm] -> activation -> [Dropout]."""
    layers = [keras.layers.Dense(units, use_bias=not batch_norm,  # BN's beta replaces the bias
                                 kernel_initializer=kernel_initializer, kernel_regularizer=weight_penalty(l1, l2))]
    if batch_norm:
        layers.append(batch_normalization())
    layers.append(keras.layers.Activation(activation))
    if dropout_rate:
        layers.append(dropout(dropout_rate))
    return layers


def conv_block(filters: int, *, convs: int, kernel_size: int, padding: str, activation: str, dropout_rate: float,
               batch_norm: bool, l1: float, l2: float, kernel_initializer: str) -> list[keras.layers.Layer]:
    """(Conv -> [BatchNorm] -> activation) x convs -> 2x2 max-pool -> [Dropout]; halves height and width
    (after each 'valid' conv has trimmed kernel_size - 1)."""
    layers: list[keras.layers.Layer] = []
    for _ in range(convs):
        layers.append(keras.layers.Conv2D(filters, kernel_size, padding=padding, use_bias=not batch_norm,
                                          kernel_initializer=kernel_initializer,
                                          kernel_regularizer=weight_penalty(l1, l2)))
        if batch_norm:
            layers.append(batch_normalization(fused=True))
        layers.append(keras.layers.Activation(activation))
    layers.append(keras.layers.MaxPooling2D(2))
    if dropout_rate:
        layers.append(dropout(dropout_rate))
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
