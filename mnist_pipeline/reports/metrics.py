"""Classification numbers from labels and predicted probabilities (NumPy only)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(true class, predicted class) counts, int64."""
    return np.bincount(num_classes * labels.astype(np.int64) + predictions, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def per_class_table(confusion: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class; a class never predicted has precision 0 (not NaN)."""
    true_positive = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)]


def most_confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to `k` misclassified examples, highest predicted-class probability first."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]


UNSURE_ACCURACY = 0.9  # answers less often right than this on validation are flagged as unsure


def unsure_threshold(probabilities: np.ndarray, labels: np.ndarray, accuracy: float = UNSURE_ACCURACY) -> float:
    """The confidence (top probability) below which a run's validation answers were right less than `accuracy`
    of the time. How often an answer is right, as a function of its confidence, is estimated by isotonic
    regression (the most likely non-decreasing curve: more confident answers are not less often right); the
    threshold lies where that curve reaches `accuracy`. 0.0 when it is there from the lowest confidence on
    (nothing is ever unsure); above 1 when it never gets there (every answer is)."""
    from scipy.optimize import isotonic_regression

    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    levels, group = np.unique(confidence, return_inverse=True)  # answers of one confidence count together
    count = np.bincount(group, minlength=len(levels))
    rate = isotonic_regression(np.bincount(group, right, len(levels)) / count, weights=count).x
    reached = np.nonzero(rate >= accuracy)[0]
    if reached.size == 0:
        return float(np.nextafter(np.float64(1.0), 2.0))
    first = reached[0]
    return 0.0 if first == 0 else float((levels[first - 1] + levels[first]) / 2)
