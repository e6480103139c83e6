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
    """The confidence (top probability) below which a run's validation answers were right less than
    `accuracy` of the time: the largest level such that the answers under it, taken together, fall short.
    0.0 when no low-confidence group falls short (nothing is ever unsure); above 1 when the whole split does."""
    confidence = probabilities.max(axis=1)
    order = np.argsort(confidence, kind="stable")
    right = (probabilities.argmax(axis=1) == labels)[order]
    short = np.nonzero(np.cumsum(right) < accuracy * np.arange(1, len(right) + 1))[0]
    if short.size == 0:
        return 0.0
    k = short[-1]  # the answers order[:k + 1] fall short together
    if k + 1 == len(right):
        return float(np.nextafter(np.float64(1.0), 2.0))
    return float((confidence[order[k]] + confidence[order[k + 1]]) / 2)
