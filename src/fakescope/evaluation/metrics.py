"""Detection metrics as pure functions of (labels, scores); label 1 = fake = positive.

Definitions follow scikit-learn (tests compare against it): ROC-AUC with ties
counted half, AP as the step-wise sum over distinct thresholds.
"""
from __future__ import annotations

from typing import Sequence

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


def threshold_at_fpr(real_scores, target_fpr: float, margin: str = "least") -> float:
    """A threshold whose false-positive rate on these real images is <= target (score >= t means
    fake). margin "least": the smallest such threshold; "midpoint": halfway between the highest
    real it must pass and the next one up (or 1), for scores recomputed later (a localiser's map
    statistic) that may land a rounding error away from where they were measured."""
    if margin not in ("least", "midpoint"):
        raise ValueError(f"margin must be least or midpoint, not {margin!r}")
    s = np.sort(np.asarray(real_scores, np.float64))[::-1]
    if not len(s):
        raise ValueError("need real images to set a threshold")
    k = int(np.floor(target_fpr * len(s)))  # at most k reals may score >= t
    if (k + 1) / len(s) <= target_fpr:  # float rounding: 0.29 * 100 == 28.999999999999996
        k += 1
    if k >= len(s):
        return float(s[-1])
    if margin == "midpoint":
        upper = s[k - 1] if k > 0 else max(1.0, s[0])
        if upper > s[k]:
            return float((s[k] + upper) / 2)
    return just_above(s[k])


def just_above(score: float) -> float:
    """The smallest threshold above `score` in float32 as well as float64: detectors compare float32
    scores with a Python float, which NumPy casts to float32, so a float64 step above a real's score
    would round back onto it and flag that real too."""
    return float(np.nextafter(np.float32(score), np.float32(np.inf)))


def tpr_at_fpr(y_true, scores, target_fpr: float) -> float:
    y, s = _check(y_true, scores)
    t = threshold_at_fpr(s[y == 0], target_fpr)
    return float((s[y == 1] >= t).mean())


def eer(y_true, scores) -> float:
    """Equal error rate: where FPR = FNR on the ROC curve, linearly interpolated between its points.

    NaN if a class is missing.
    """
    y, s = _check(y_true, scores)
    if y.sum() == 0 or (1 - y).sum() == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    d = fpr - (1 - tpr)  # non-decreasing from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.argmax(d >= 0))
    if d[i] == 0:
        return float(fpr[i])
    w = -d[i - 1] / (d[i] - d[i - 1])  # fraction of the segment (i-1, i) where d crosses 0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def best_accuracy(y_true, scores) -> tuple[float, float]:
    """Oracle accuracy over all thresholds (score >= t means fake), and such a threshold.

    The threshold returned is the midpoint between the last score called fake and the next lower
    distinct score (the highest such threshold on ties); calling everything real gives a threshold
    just above the maximum score. (NaN, NaN) for empty input.
    """
    y, s = _check(y_true, scores)
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    n_neg = int((1 - y).sum())
    tps, fps, thr = _curve(y, s)
    acc = np.r_[n_neg, tps + n_neg - fps] / n  # first entry: nothing called fake
    k = int(np.argmax(acc))
    if k == 0:
        t = just_above(thr[0])
    elif k == len(thr):  # everything called fake
        t = float(thr[-1])
    else:
        hi, lo = thr[k - 1], thr[k]
        t = float((hi + lo) / 2)
        if not lo < t <= hi:  # adjacent floats
            t = float(hi)
    return float(acc[k]), t


def bootstrap_ci(metric_fn, y_true, scores, n: int = 1000, alpha: float = 0.05, seed: int = 0,
                 stratified: bool = True) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``metric_fn(y, scores)``.

    With ``stratified`` the reals and the fakes are resampled separately, keeping the class counts
    fixed; resamples on which the metric is NaN (e.g. one class only) are ignored.
    """
    y, s = _check(y_true, scores)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in (0, 1)] if stratified else [np.arange(len(y))]
    groups = [g for g in groups if len(g)]
    if not groups:
        return float("nan"), float("nan")
    stats = np.empty(n)
    for b in range(n):
        idx = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        stats[b] = metric_fn(y[idx], s[idx])
    if np.isnan(stats).all():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _tpr_at_fpr_or_nan(y: np.ndarray, s: np.ndarray, target: float) -> float:
    if y.sum() == 0 or (1 - y).sum() == 0:
        return float("nan")
    return tpr_at_fpr(y, s, target)


def summary(y_true, scores, threshold: float) -> dict[str, float]:
    y, s = _check(y_true, scores)
    acc = class_accuracy(y, s, threshold)
    best_acc, best_t = best_accuracy(y, s)
    return {"n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int(y.sum()),
            "auc": roc_auc(y, s), "ap": average_precision(y, s), "accuracy": accuracy(y, s, threshold),
            "acc_real": acc["real"], "acc_fake": acc["fake"], "threshold": float(threshold),
            "tpr_at_1fpr": _tpr_at_fpr_or_nan(y, s, 0.01), "tpr_at_5fpr": _tpr_at_fpr_or_nan(y, s, 0.05),
            "eer": eer(y, s), "best_accuracy": best_acc, "best_threshold": best_t}


def metrics_by_generator(labels, scores, generators: Sequence[str | None], threshold: float) -> dict:
    """`summary` of every real image against the fakes of one generator at a time, by generator name."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    gens = np.array([g or "unnamed" for g in generators], dtype=object)
    real, fake = labels == 0, labels == 1
    return {g: summary(labels[real | (fake & (gens == g))], scores[real | (fake & (gens == g))], threshold)
            for g in sorted(set(gens[fake]))}
