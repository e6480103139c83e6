import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import RUN_CONFIGS
from mnist_pipeline.config import MODEL_PARAMS
from mnist_pipeline.config.model_params import constructor_mismatches
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models.registry import MODELS, build_model
from mnist_pipeline.trainer import Trainer

SMALL = {
    "linear": {},
    "mlp": {"units": 16},
    "deep_mlp": {"units": [16, 8]},
    "cnn": {"filters": [4, 8], "convs_per_block": 1, "dense_units": 8},
}


def small(name: str, **knobs):
    """SMALL[name] with those of `knobs` the model has (the linear model has no hidden layer to put them on)."""
    return {**SMALL[name], **{k: v for k, v in knobs.items() if k in MODEL_PARAMS[name].model_fields}}


def test_registry_and_schemas_name_the_same_models():
    assert list(MODELS) == list(MODEL_PARAMS) == ["linear", "mlp", "deep_mlp", "cnn"]


@pytest.mark.parametrize("name", MODELS)
def test_constructor_keywords_are_exactly_the_config_schema(name):
    assert constructor_mismatches(MODELS[name], MODEL_PARAMS[name]) == []  # names and defaults


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'vgg'; known models: linear, mlp, deep_mlp, cnn"):
        build_model("vgg")


def test_bad_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="model 'mlp': hidden"):
        build_model("mlp", hidden=3)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("knobs", [{}, {"batch_norm": True, "dropout_rate": 0.3, "activation": "tanh"}])
def test_output_is_batch_by_10_logits(name, knobs):
    model = build_model(name, **small(name, **knobs))
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    for training in (False, True):
        out = model(x, training=training)
        assert tuple(out.shape) == (5, 10)
        assert out.dtype == "float32"


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_reloads_with_same_outputs(name, tmp_path):
    model = build_model(name, **small(name, batch_norm=True, activation="tanh"))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")  # safe_mode=True by default
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(again(x, training=False), model(x, training=False), atol=1e-6)
    assert again.get_config() == model.get_config()


def test_deep_mlp_has_one_dense_per_width_plus_logits():
    model = build_model("deep_mlp", units=[32, 16, 8])
    dense = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    assert [tuple(w.shape) for w in dense] == [(784, 32), (32, 16), (16, 8), (8, 10)]


@pytest.mark.parametrize("name", MODELS)
def test_weight_penalties_reach_the_minimized_loss(name):
    x = np.random.default_rng(2).random((8, 28, 28, 1), dtype=np.float32)
    y = np.arange(8, dtype=np.int32) % 10
    losses = {}
    for l2 in (0.0, 0.01):
        keras.utils.set_random_seed(0)
        model = build_model(name, **small(name, l2=l2, dropout_rate=0.0, dense_dropout_rate=0.0,
                                             kernel_initializer="glorot_uniform"))  # not all-zero weights
        trainer = Trainer(model, keras.optimizers.SGD(0.0), global_batch_size=8)
        cross_entropy = float(tf.reduce_mean(trainer.loss_fn(y, model(x, training=True))))
        penalty = float(sum(model.losses)) if model.losses else 0.0
        losses[l2] = (float(trainer.learning_step(tf.constant(x), tf.constant(y))), cross_entropy, penalty)
    step_loss, cross_entropy, penalty = losses[0.01]
    assert penalty > 0
    assert step_loss == pytest.approx(cross_entropy + penalty, rel=1e-5)
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], rel=1e-5)
    assert losses[0.0][2] == 0


def test_fused_batch_norm_matches_keras_batch_norm_in_training_and_inference():
    from mnist_pipeline.models.blocks import FusedBatchNormalization

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 4)), tf.float32)
    fused, plain = FusedBatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    outputs, gradients = [], []
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(tf.range(1.0, 5.0))
        layer.beta.assign(tf.fill([4], 0.5))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))  # gradients that differ per element
        gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
        outputs.append((y, layer(x, training=False), layer.moving_mean, layer.moving_variance))
    for ours, theirs in zip(outputs[0] + tuple(gradients[0]), outputs[1] + tuple(gradients[1]), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-4, atol=2e-4)
    assert not np.allclose(np.asarray(fused.moving_variance), 1.0)  # the statistics did move


def test_linear_model_is_softmax_regression_one_template_per_class_grown_from_zeros():
    model = build_model("linear")
    assert [type(layer).__name__ for layer in model.stack] == ["Flatten", "Dense"]
    assert tuple(model.stack[-1].kernel.shape) == (784, 10)
    assert model.count_params() == 7850
    np.testing.assert_array_equal(np.asarray(model.stack[-1].kernel), 0)  # the default: nothing the data did not put
    x = np.random.default_rng(3).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(model(x), 0)  # all-zero logits: every class equally likely before training


def test_cnn_takes_a_conv_count_per_block():
    model = build_model("cnn", filters=[4, 8], convs_per_block=[1, 2], dense_units=8)
    convs = [layer for layer in model.stack if isinstance(layer, keras.layers.Conv2D)]
    model(np.zeros((1, 28, 28, 1), np.float32))
    assert [c.filters for c in convs] == [4, 8, 8]


def test_cnn_without_a_hidden_dense_layer_flattens_straight_to_the_logits():
    model = build_model("cnn", filters=[4, 8], convs_per_block=1, dense_units=0, dense_dropout_rate=0.5)
    model(np.zeros((1, 28, 28, 1), np.float32))
    dense = [layer for layer in model.stack if isinstance(layer, keras.layers.Dense)]
    assert [tuple(d.kernel.shape) for d in dense] == [(7 * 7 * 8, 10)]
    assert isinstance(model.stack[-2], keras.layers.Dropout)


def test_cnn_valid_padding_trims_each_conv_like_the_keras_example():
    # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5: the Keras example's 5x5x64 features
    model = build_model("cnn", filters=[4, 8], convs_per_block=1, padding="valid", dense_units=0)
    model(np.zeros((1, 28, 28, 1), np.float32))
    dense = [layer for layer in model.stack if isinstance(layer, keras.layers.Dense)]
    assert [tuple(d.kernel.shape) for d in dense] == [(5 * 5 * 8, 10)]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_config_side_parameter_count_matches_keras_for_every_shipped_config(path):
    # model_size bounds training memory before TensorFlow is imported; it must count what Keras builds.
    from mnist_pipeline.config import load_config
    from mnist_pipeline.config.footprint import model_size

    cfg = load_config(path)
    assert model_size(cfg.model.name, cfg.model.params)[0] == build_model(cfg.model.name,
                                                                          **cfg.model.params).count_params()
