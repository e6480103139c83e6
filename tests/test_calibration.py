"""Calibration scores and temperature scaling on synthetic predictors whose calibration is known."""

import numpy as np
import pytest

from mnist_pipeline.calibration import BINS, apply_temperature, calibrate, fit_temperature, reliability, scores


def predictor(confidence: np.ndarray, accuracy: np.ndarray, seed: int = 0, classes: int = 10):
    """(probabilities, labels) of a predictor that says `confidence` for its answer (class 0), the rest spread
    evenly, and is right with probability `accuracy` (per example)."""
    rng = np.random.default_rng(seed)
    n = len(confidence)
    probabilities = np.repeat(((1 - confidence) / (classes - 1))[:, None], classes, axis=1)
    probabilities[:, 0] = confidence
    right = rng.random(n) < accuracy
    labels = np.where(right, 0, rng.integers(1, classes, n))
    return probabilities, labels


def test_a_calibrated_predictor_has_an_ece_near_zero_and_an_overconfident_one_its_gap():
    confidence = np.random.default_rng(1).uniform(0.2, 1.0, 200_000)
    calibrated = scores(*predictor(confidence, confidence))
    assert calibrated.ece < 0.005
    overconfident = scores(*predictor(confidence, confidence - 0.15))
    assert overconfident.ece == pytest.approx(0.15, abs=0.005)
    assert overconfident.mce >= overconfident.ece
    assert calibrated.accuracy == pytest.approx(np.mean(confidence), abs=0.005)


def test_mce_is_the_worst_bins_gap():
    # Every answer 0.95 sure; right 95% of the time except in one bin, where answers said 0.5 and were right 0.2.
    confidence = np.r_[np.full(90_000, 0.95), np.full(10_000, 0.5)]
    accuracy = np.r_[np.full(90_000, 0.95), np.full(10_000, 0.2)]
    result = scores(*predictor(confidence, accuracy, seed=2))
    assert result.mce == pytest.approx(0.3, abs=0.02)
    assert result.ece == pytest.approx(0.1 * 0.3, abs=0.005)  # one tenth of the answers, 0.3 off


def test_nll_and_brier_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1])
    result = scores(probabilities, labels)
    assert result.nll == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)
    assert result.brier == pytest.approx(((0.09 + 0.04 + 0.01) + (0.01 + 0.81 + 0.64)) / 2)
    assert result.accuracy == 0.5


def test_reliability_bins_are_15_equal_widths_and_count_every_answer():
    probabilities, labels = predictor(np.array([1.0, 0.5, 0.34, 0.0667]), np.ones(4))
    table = reliability(probabilities, labels)
    assert len(table.counts) == BINS
    np.testing.assert_allclose(np.diff(table.edges), 1 / BINS)
    assert table.counts.sum() == 4
    assert table.counts[-1] == 1  # a confidence of exactly 1 is in the last bin
    assert np.isnan(table.accuracy[table.counts == 0]).all()


def overconfident_logits(n: int, sharpen: float, seed: int):
    """Labels drawn from softmax(z), and a model that outputs softmax(sharpen * z): too sure, by `sharpen`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 10))
    true = np.exp(z - z.max(axis=1, keepdims=True))
    true /= true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in true])
    model = np.exp(sharpen * (z - z.max(axis=1, keepdims=True)))
    return (model / model.sum(axis=1, keepdims=True)).astype(np.float32), labels


def test_temperature_scaling_finds_the_sharpening_lowers_nll_and_keeps_every_answer():
    val, val_labels = overconfident_logits(20_000, 2.5, seed=3)
    test, test_labels = overconfident_logits(20_000, 2.5, seed=4)
    temperature = fit_temperature(val, val_labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    result = calibrate(val, val_labels, test, test_labels)
    assert result.val_nll_after < result.val_nll_before
    assert result.test_after.nll < result.test_before.nll
    assert result.test_after.ece < result.test_before.ece / 3
    scaled = apply_temperature(test, temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1), test.argmax(axis=1))  # not one answer changes
    assert result.test_after.accuracy == result.test_before.accuracy
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.sum(axis=1), 1, rtol=1e-5)


def test_an_underconfident_model_gets_a_temperature_below_one():
    val, labels = overconfident_logits(20_000, 0.5, seed=5)
    assert fit_temperature(val, labels) == pytest.approx(0.5, rel=0.05)


def test_temperature_on_probabilities_is_temperature_on_logits():
    logits = np.random.default_rng(6).normal(0, 4, (50, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.exp(logits / 1.7) / np.exp(logits / 1.7).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(apply_temperature(probabilities, 1.7), expected, rtol=1e-9)


def test_probabilities_that_underflowed_to_zero_stay_finite():
    probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    for temperature in (0.05, 1.5, 20.0):
        scaled = apply_temperature(probabilities, temperature)
        assert np.isfinite(scaled).all()
        np.testing.assert_array_equal(scaled.argmax(axis=1), [0, 0])
    assert np.isfinite(scores(probabilities, np.array([1, 2])).nll)  # a certain wrong answer: large, not inf


def test_empty_splits_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="at least one example"):
        fit_temperature(np.zeros((0, 10)), np.zeros(0, int))
    with pytest.raises(ValueError, match="at least one example"):
        scores(np.zeros((0, 10)), np.zeros(0, int))
