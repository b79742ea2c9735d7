"""Does the text alone give the label away?

Datasets often pair real images with scraped captions or class names and fake images
with the prompts that generated them. Then a probe that reads text features learns the
kind of text, not the image. `text_leak_check` fits a balanced linear probe on the text
features alone, cross-validated over group-disjoint folds, and flags a leak when the
held-out ROC-AUC reaches `threshold`.

    info = warn_if_text_leaks(T, y, groups)   # warns TextLeakWarning when info["leaks"]
"""
from __future__ import annotations

import warnings

import numpy as np

from ..evaluation.metrics import roc_auc


# Stronger than the probe's default sweep: a leak shows at any of these, and weak L2 on separable
# text features (the leaking case) makes L-BFGS run to its iteration cap, seconds per fit.
_L2_GRID = (1e-2, 1e-1, 1.0)


class TextLeakWarning(UserWarning):
    """Text features alone separate real from fake: they would leak the label."""


def _folds(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index per sample; every group sits in exactly one fold."""
    uniq = np.unique(groups)
    fold_of = {g: i % k for i, g in enumerate(rng.permutation(uniq))}
    return np.fromiter((fold_of[g] for g in groups), dtype=np.int64, count=len(groups))


def text_leak_check(T, y, groups=None, threshold: float = 0.75, folds: int = 5,
                    max_samples: int = 4000, seed: int = 0) -> dict:
    """Held-out ROC-AUC of a linear probe on text features T (N, D) for labels y (0 real, 1 fake).

    groups: samples sharing a group (views of one image, one caption source...) never sit
    on both sides of a split. Returns {"text_only_auc", "leaks", "message"}; when a class
    is missing the AUC is NaN and leaks is False.
    """
    from ..heads import make_head

    T = np.asarray(T, np.float32)
    y = np.asarray(y).astype(np.int64).ravel()
    if T.ndim != 2 or len(T) != len(y):
        raise ValueError(f"text_leak_check: T must be (N, D) with N == len(y); got {T.shape} and {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("text_leak_check: labels must be 0 (real) or 1 (fake)")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(f"text_leak_check: {len(groups)} groups vs {len(y)} labels")
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"text_leak_check: threshold must be in [0.5, 1], got {threshold}")

    rng = np.random.default_rng(seed)
    if len(y) > max_samples:  # a leak this check cares about shows on a few thousand samples
        keep = np.sort(rng.choice(len(y), max_samples, replace=False))
        T, y, groups = T[keep], y[keep], groups[keep]
    n_groups = len(np.unique(groups))
    if y.min() == y.max() or n_groups < 2:
        return {"text_only_auc": float("nan"), "leaks": False,
                "message": "text leak check skipped: it needs real and fake samples in at least two groups"}

    fold = _folds(groups, min(folds, n_groups), rng)
    aucs, weights = [], []
    scores = np.full(len(y), np.nan)
    for f in np.unique(fold):
        test = fold == f
        train = ~test
        if y[train].min() == y[train].max():  # the probe cannot learn from one class
            continue
        head = make_head("linear", l2_grid=_L2_GRID, seed=seed)
        head.fit(T[train], y[train], groups[train])
        scores[test] = head.predict(T[test])
        if y[test].min() != y[test].max():
            aucs.append(roc_auc(y[test], scores[test]))
            weights.append(test.sum())
    if aucs:
        auc = float(np.average(aucs, weights=weights))
    else:  # every held-out fold had one class: rank the pooled out-of-fold scores
        done = ~np.isnan(scores)
        auc = roc_auc(y[done], scores[done]) if done.any() else float("nan")
    leaks = bool(np.isfinite(auc) and auc >= threshold)
    if leaks:
        message = (
            f"Text alone separates real from fake (held-out AUC {auc:.2f} >= {threshold:.2f}). "
            "The captions of the two classes are probably of different kinds (for example scraped "
            "captions or class names for the reals, generation prompts for the fakes), so text "
            "features will leak the label: a probe using them learns the kind of text, not the image. "
            "Give both classes the same kind of text, or use image features only.")
    elif np.isfinite(auc):
        message = (f"Text alone does not separate real from fake (held-out AUC {auc:.2f} < "
                   f"{threshold:.2f}): no sign that the texts leak the label.")
    else:
        message = "text leak check inconclusive: no held-out fold could be scored"
    return {"text_only_auc": auc, "leaks": leaks, "message": message}


def warn_if_text_leaks(T, y, groups=None, threshold: float = 0.75, **kwargs) -> dict:
    """text_leak_check, plus warnings.warn(message, TextLeakWarning) when the text leaks."""
    info = text_leak_check(T, y, groups, threshold=threshold, **kwargs)
    if info["leaks"]:
        warnings.warn(info["message"], TextLeakWarning, stacklevel=2)
    return info


__all__ = ["TextLeakWarning", "text_leak_check", "warn_if_text_leaks"]
