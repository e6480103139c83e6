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
