"""Whether a run's confidence can be taken at its word: calibration scores and temperature scaling.

NumPy and SciPy only, no TensorFlow: training, `mnist evaluate`, `predict`, `ensemble` and the report all use it
on class probabilities. Scores follow Guo et al. 2017, "On Calibration of Modern Neural Networks": expected and
maximum calibration error over 15 equal-width confidence bins, negative log-likelihood, and the Brier score.

Temperature scaling divides the scores by one temperature T before the softmax. It is applied here to the
log of the probabilities, which differ from the logits by one constant per image, so softmax(log p / T) is
softmax(logits / T) exactly, and the same formula also calibrates probabilities that are already a mean (of
test-time flips, of an ensemble). T > 0 never changes which class is most likely, so accuracy stays the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mnist_pipeline.reports.metrics import unsure_threshold

BINS = 15  # equal-width confidence bins, as Guo et al. 2017
# Probabilities are float32: a class scored below this has underflowed to 0, and its log would be -inf.
# Exports apply the same floor in their graph.
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)
# The fitted temperature is searched in log space over [1/20, 20]: far wider than trained models need (label
# smoothing's underconfidence gives T < 1, overconfidence T > 1), and bounded so that a degenerate validation
# split cannot give 0 or infinity.
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class Scores:
    """Calibration of one set of answers; ece and mce are fractions (0.01 = one point of confidence)."""

    accuracy: float
    ece: float  # expected calibration error: |accuracy - mean confidence| per bin, weighted by its answers
    mce: float  # maximum calibration error: the worst bin's gap
    nll: float  # mean negative log-likelihood of the true class
    brier: float  # mean squared distance between the probabilities and the one-hot label (0..2)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Reliability:
    """The reliability diagram's numbers: per confidence bin, how many answers, their mean confidence and how
    often they were right (NaN for an empty bin)."""

    edges: np.ndarray  # (BINS + 1,) bin edges over [0, 1]
    counts: np.ndarray  # (BINS,)
    confidence: np.ndarray  # (BINS,)
    accuracy: np.ndarray  # (BINS,)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    confidence = probabilities.max(axis=1).astype(np.float64)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lower, upper]: a confidence of exactly 1 falls in the last one, as in Guo et al.'s code.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, right, bins) / counts
    return Reliability(edges, counts, mean_confidence, accuracy)


def scores(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Scores:
    """Accuracy, ECE, MCE, NLL and Brier score of (N, classes) probabilities against (N,) labels."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise ValueError("calibration needs at least one example")
    table = reliability(probabilities, labels, bins)
    filled = table.counts > 0
    gaps = np.abs(table.accuracy[filled] - table.confidence[filled])
    chosen = probabilities[np.arange(len(labels)), labels]
    one_hot = np.eye(probabilities.shape[1])[labels]
    return Scores(
        accuracy=float(np.mean(probabilities.argmax(axis=1) == labels)),
        ece=float(np.sum(gaps * table.counts[filled]) / len(labels)),
        mce=float(gaps.max()),
        nll=float(-np.mean(np.log(np.maximum(chosen, SMALLEST_PROBABILITY)))),
        brier=float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1))),
    )


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row, in the input's float type (float32 in, float32 out)."""
    dtype = probabilities.dtype if np.issubdtype(probabilities.dtype, np.floating) else np.float64
    if temperature == 1.0:
        return np.asarray(probabilities, dtype)
    scaled = np.log(np.maximum(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(dtype)


def _nll(log_probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = log_probabilities / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normalizer = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_normalizer - scaled[np.arange(len(labels)), labels]))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the negative log-likelihood of `labels` (the validation split's), found
    by bounded scalar minimization over log T (NLL is smooth and has one minimum in T for these scores)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one example")
    log_probabilities = np.log(np.maximum(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY))
    low, high = np.log(TEMPERATURE_RANGE)
    best = minimize_scalar(lambda log_t: _nll(log_probabilities, labels, float(np.exp(log_t))),
                           bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x))


@dataclass(frozen=True)
class Calibration:
    """metrics.json's `calibration`: the temperature fitted on validation, and the test split's scores before
    and after it is applied. `unsure_below` is predict's unsure level for the calibrated probabilities."""

    temperature: float
    fitted_on: str  # "validation"
    val_nll_before: float
    val_nll_after: float
    test_before: Scores
    test_after: Scores
    unsure_below: float
    bins: int = BINS

    def to_dict(self) -> dict:
        return asdict(self)  # the nested Scores too


def calibrate(val_probabilities: np.ndarray, val_labels: np.ndarray, test_probabilities: np.ndarray,
              test_labels: np.ndarray) -> Calibration:
    """Fit the temperature on validation and score the test split before and after it."""
    temperature = fit_temperature(val_probabilities, val_labels)
    val_after = apply_temperature(val_probabilities, temperature)
    return Calibration(
        temperature=temperature, fitted_on="validation",
        val_nll_before=scores(val_probabilities, val_labels).nll, val_nll_after=scores(val_after, val_labels).nll,
        test_before=scores(test_probabilities, test_labels),
        test_after=scores(apply_temperature(test_probabilities, temperature), test_labels),
        unsure_below=unsure_threshold(val_after, val_labels))
