"""Binary-classification metrics on probabilities, in NumPy (no scikit-learn needed)."""

from __future__ import annotations

import math

import numpy as np

from stages.lib.study import THRESHOLD


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


def predicted_labels(probs, threshold: float = THRESHOLD) -> np.ndarray:
    """The label each probability of the positive class stands for: 1 at or above the
    threshold, else 0 (the one decision rule of evaluate, the report, predict and Grad-CAM)."""
    return (np.asarray(probs) >= threshold).astype(int)


def average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's average_precision_score
    computes it: sum over the distinct thresholds of (recall step) * precision there. Unlike
    ROC AUC it moves with the share of positives: a rare positive class pulls it down."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    curve = roc_curve(labels, probs)  # tpr = recall at each distinct threshold, from the top
    tps = curve["tpr"][1:] * labels.sum()
    predicted_positive = tps + curve["fpr"][1:] * (~labels).sum()
    precision = tps / predicted_positive
    recall_steps = np.diff(curve["tpr"])
    return float(np.sum(recall_steps * precision))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Accuracy (with its 95% Wilson interval), log loss, ROC AUC, precision, recall, F1,
    the confusion counts, and what stays honest when one class outnumbers the other: the
    recall of each class (`recall` of the positive class, label 1, and `specificity`, the
    recall of the negative one), balanced accuracy (their mean) and the area under the
    precision-recall curve (`pr_auc`)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = predicted_labels(probs, threshold)
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
    specificity = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "loss": float(loss),
        "roc_auc": roc_auc(labels, probs),
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "balanced_accuracy": (recall + specificity) / 2,
        "pr_auc": average_precision(labels, probs),
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n,
    }


# ---------------------------------------------------------------- calibration
#
# How far to trust a probability. Binary convention throughout: reliability of P(dog) over
# 15 equal-width bins on [0, 1] (Naeini et al. 2015, AAAI; scikit-learn's
# `calibration_curve(strategy="uniform")`), rather than of the confidence max(p, 1 - p) over
# [0.5, 1] (Guo et al. 2017, who also use 15 bins): P(dog) keeps the two classes apart, so a
# model that leans towards dog (train_custom_aug calls 70% of the test images dog) shows
# it instead of averaging it away, and the diagram reads straight off the number the model
# prints. The 15 bins are symmetric about 0.5 (the middle one is [7/15, 8/15)), so a cat at
# P(dog) = 0.01 and a dog at 0.99 fall into mirror-image bins.

CALIBRATION_BINS = 15


def _check_binary(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(labels) != len(probs):
        raise ValueError(f"labels and probs differ in length: {len(labels)} and {len(probs)}")
    if len(labels) == 0:
        raise ValueError("no predictions: labels and probs are empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (cat) or 1 (dog), got {np.unique(labels)[:5].tolist()}")
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise ValueError("probs must be probabilities in [0, 1]")
    return labels.astype(np.float64), probs


def reliability_curve(labels, probs, bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """Per non-empty bin of P(dog) (equal width on [0, 1]; bin i holds i/bins <= p < (i+1)/bins,
    the last one also p = 1): its edges, the mean predicted P(dog), the observed fraction of
    dogs and the number of images. A calibrated model has mean_predicted == observed."""
    labels, probs = _check_binary(labels, probs)
    index = np.minimum((probs * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    used = count > 0
    mean_predicted = np.bincount(index, weights=probs, minlength=bins)[used] / count[used]
    observed = np.bincount(index, weights=labels, minlength=bins)[used] / count[used]
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "bin_low": edges[:-1][used],
        "bin_high": edges[1:][used],
        "mean_predicted": mean_predicted,
        "observed_frequency": observed,
        "count": count[used],
    }


def calibration_error_of_curve(curve: dict[str, np.ndarray]) -> float:
    """ECE from a reliability curve: the count-weighted mean gap between the diagonal and the
    curve, so a diagram's legend and the metric cannot disagree."""
    gaps = np.abs(curve["observed_frequency"] - curve["mean_predicted"])
    return float(np.sum(curve["count"] * gaps) / np.sum(curve["count"]))


def expected_calibration_error(labels, probs, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error of P(dog): sum over the `bins` equal-width bins on [0, 1] of
    (images in bin / all images) * |fraction of dogs in bin - mean P(dog) in bin|.

    0 for a calibrated model; 0.1 means that, on average over the images, the stated P(dog)
    is 10 points away from how often such images are dogs. Same binning as
    `reliability_curve` (see the note above it for why P(dog) and not max(p, 1 - p))."""
    return calibration_error_of_curve(reliability_curve(labels, probs, bins))


def brier_score(labels, probs) -> float:
    """Mean squared difference between P(dog) and the label (0 perfect, 0.25 for always 0.5):
    a proper scoring rule, so unlike ECE it cannot be gamed by predicting the base rate."""
    labels, probs = _check_binary(labels, probs)
    return float(np.mean((probs - labels) ** 2))


# ---------------------------------------------------------------- paired comparisons
#
# Two models scored on the same images: their accuracies are not independent (most images
# both get right), so the two Wilson intervals overlapping says little. McNemar's test
# looks only at the discordant images, the ones exactly one of the two models gets right.

SIGNIFICANCE = 0.05  # a difference is called real when McNemar's p is below this


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact test: the two-sided binomial test of `only_a` against `only_b`
    discordant pairs (images only model A, resp. only model B, gets right) with p = 1/2,
    p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)); 1 with no discordant pair.
    Exact in integers, so it holds for any count."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(correct_a, correct_b) -> dict:
    """Two models' right/wrong on the same images (booleans, same order): their accuracies,
    how many images only A got right, only B got right, and McNemar's exact p."""
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need the same, non-zero number of images for both models, got {len(a)} and {len(b)}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()), "only_a": only_a, "only_b": only_b,
            "p": mcnemar_p(only_a, only_b), "n": len(a)}
