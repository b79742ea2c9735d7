"""Detection metrics as pure functions of (labels, scores); label 1 = fake = positive.

Definitions follow scikit-learn (tests compare against it): ROC-AUC with ties
counted half, AP as the step-wise sum over distinct thresholds.
"""
from __future__ import annotations

import numpy as np


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels vs {s.shape[0]} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y, s


def roc_auc(y_true, scores) -> float:
    """P(score of a random fake > score of a random real), ties counting 1/2. NaN if a class is missing."""
    y, s = _check(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, descending."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps, s[last]


def average_precision(y_true, scores) -> float:
    y, s = _check(y_true, scores)
    if y.sum() == 0:
        return float("nan")
    tps, fps, _ = _curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf, as scikit-learn does."""
    y, s = _check(y_true, scores)
    tps, fps, thr = _curve(y, s)
    return (np.r_[0, fps] / max(1, (1 - y).sum()), np.r_[0, tps] / max(1, y.sum()), np.r_[np.inf, thr])


def accuracy(y_true, scores, threshold: float) -> float:
    y, s = _check(y_true, scores)
    return float(((s >= threshold).astype(int) == y).mean()) if len(y) else float("nan")


def class_accuracy(y_true, scores, threshold: float) -> dict[str, float]:
    """Accuracy on reals (1 - FPR) and on fakes (TPR) separately: a balanced view of one threshold."""
    y, s = _check(y_true, scores)
    out = {}
    for name, label in (("real", 0), ("fake", 1)):
        m = y == label
        out[name] = float(((s[m] >= threshold).astype(int) == label).mean()) if m.any() else float("nan")
    return out


def threshold_at_fpr(real_scores, target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on these real images is <= target (score >= t means fake)."""
    s = np.sort(np.asarray(real_scores, np.float64))[::-1]
    if not len(s):
        raise ValueError("need real images to set a threshold")
    k = int(np.floor(target_fpr * len(s)))  # at most k reals may score >= t
    if (k + 1) / len(s) <= target_fpr:  # float rounding: 0.29 * 100 == 28.999999999999996
        k += 1
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def tpr_at_fpr(y_true, scores, target_fpr: float) -> float:
    y, s = _check(y_true, scores)
    t = threshold_at_fpr(s[y == 0], target_fpr)
    return float((s[y == 1] >= t).mean())


def summary(y_true, scores, threshold: float) -> dict[str, float]:
    y, s = _check(y_true, scores)
    acc = class_accuracy(y, s, threshold)
    return {"n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int(y.sum()),
            "auc": roc_auc(y, s), "ap": average_precision(y, s), "accuracy": accuracy(y, s, threshold),
            "acc_real": acc["real"], "acc_fake": acc["fake"], "threshold": float(threshold)}
