"""Binary-classification metrics on probabilities, in NumPy (no scikit-learn needed)."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound near 0 and 1, unlike p +- 2se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random dog > score of a random cat), ties 1/2."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(probs, kind="mergesort")
    ranks = np.empty(len(probs), dtype=np.float64)
    sorted_probs = np.asarray(probs)[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_probs, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(probs), kind="mergesort")
    p, y = np.asarray(probs)[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return {
        "fpr": np.r_[0.0, fps / max(1, (~labels).sum())],
        "tpr": np.r_[0.0, tps / max(1, labels.sum())],
        "threshold": np.r_[1.0, p[last_of_tie]],
    }


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy (with its 95% Wilson interval), log loss, ROC AUC, precision, recall, F1 and
    the confusion counts; the positive class is dog (label 1)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    n = len(labels)
    low, high = wilson_interval(tp + tn, n)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "loss": float(loss),
        "roc_auc": roc_auc(labels, probs),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n,
    }
