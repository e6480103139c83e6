"""Integrated gradients: exact on a linear model, complete (within its tolerance) on a nonlinear one."""

import keras
import numpy as np

from mnist_pipeline.saliency import MIN_STEPS, TOLERANCE, integrated_gradients


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)


def test_on_a_linear_model_the_maps_are_the_input_times_the_weight_difference():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    x, baseline = images(3, 1), np.full((28, 28, 1), -0.5, np.float32)
    pushed, against = np.array([1, 4, 9]), np.array([0, 2, 3])
    result = integrated_gradients(model, x, baseline, pushed, against)
    kernel = model.layers[-1].kernel.numpy().reshape(28, 28, 10)
    for i in range(3):
        expected = (x[i, ..., 0] - baseline[..., 0]) * (kernel[..., pushed[i]] - kernel[..., against[i]])
        np.testing.assert_allclose(result.maps[i], expected, rtol=1e-4, atol=1e-6)
    assert result.steps == MIN_STEPS  # exact from the first try: the gradient is the same all along the path


def test_on_a_nonlinear_cnn_the_attributions_add_up_to_the_logit_difference():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(10)])
    x, baseline = images(4, 2), np.zeros((28, 28, 1), np.float32)
    pushed, against = np.array([3, 5, 7, 1]), np.array([0, 0, 2, 8])
    result = integrated_gradients(model, x, baseline, pushed, against)
    logits = model(x).numpy()
    blank = model(baseline[None]).numpy()[0]
    difference = logits[np.arange(4), pushed] - logits[np.arange(4), against] - (blank[pushed] - blank[against])
    np.testing.assert_allclose(result.difference, difference, rtol=1e-4, atol=1e-5)
    totals = result.maps.reshape(4, -1).sum(axis=1)
    assert np.all(np.abs(totals - difference) <= np.maximum(TOLERANCE * np.abs(difference), TOLERANCE))
    np.testing.assert_allclose(result.error, np.abs(totals - difference), rtol=1e-3, atol=1e-6)
    assert result.maps.shape == (4, 28, 28)
    assert np.abs(result.maps).max() > 0


def test_too_few_steps_show_as_error_and_more_steps_remove_it(monkeypatch):
    import mnist_pipeline.saliency as saliency

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(10)])
    x = images(2, 3) * 4  # far from the blank image: a curved path
    pushed, against = np.array([1, 2]), np.array([0, 0])
    monkeypatch.setattr(saliency, "MIN_STEPS", 1)
    monkeypatch.setattr(saliency, "MAX_STEPS", 1)
    rough = integrated_gradients(model, x, np.zeros((28, 28, 1), np.float32), pushed, against)
    monkeypatch.setattr(saliency, "MAX_STEPS", 1024)
    fine = integrated_gradients(model, x, np.zeros((28, 28, 1), np.float32), pushed, against)
    assert fine.steps > rough.steps == 1
    assert fine.error.max() < rough.error.max()
    assert np.all(fine.error <= np.maximum(TOLERANCE * np.abs(fine.difference), TOLERANCE))
