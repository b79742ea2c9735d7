"""Calibration of P(fake): reliability, ECE, Brier, temperature and Platt scaling (numpy only).

Labels: 1 = fake = positive; ``probs`` are predicted probabilities that an image is fake.
"""
from __future__ import annotations

import numpy as np

from .metrics import _check as check_labels_scores


def _check(y, x) -> tuple[np.ndarray, np.ndarray]:
    """The metrics' input check, with float labels for the arithmetic below."""
    y, x = check_labels_scores(y, x)
    return y.astype(np.float64), x


def sigmoid(x):
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def logit(p, eps: float = 1e-7):
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(z) against y: softplus(z) - y * z."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def log_loss(y, probs) -> float:
    """Mean binary cross-entropy of predicted P(fake) (clipped as `logit` clips)."""
    y, p = _check(y, probs)
    return _nll(y, logit(p))


def _bin_index(probs: np.ndarray, n_bins: int) -> np.ndarray:
    # equal-width bins [k/n, (k+1)/n), the last one closed so that p = 1 falls in it
    return np.clip(np.floor(probs * n_bins).astype(int), 0, n_bins - 1)


def reliability_bins(y, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin of predicted P(fake): ``centers``, ``mean_predicted``,
    ``observed`` (fraction of fakes) and ``counts``; the means are NaN in empty bins."""
    y, p = _check(y, probs)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    b = _bin_index(p, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(b, weights=p, minlength=n_bins) / counts
        observed = np.bincount(b, weights=y, minlength=n_bins) / counts
    return {"centers": (np.arange(n_bins) + 0.5) / n_bins, "mean_predicted": mean_pred,
            "observed": observed, "counts": counts}


def ece(y, probs, n_bins: int = 15) -> float:
    """Expected calibration error, binary reliability form.

    sum_b (n_b / N) * |acc_b - conf_b| over equal-width bins of the predicted P(fake), with
    conf_b = mean predicted P(fake) in the bin and acc_b = fraction of fakes in it (not the
    top-label "accuracy vs max-probability" form used for multi-class models). NaN if empty.
    """
    r = reliability_bins(y, probs, n_bins)
    n = r["counts"].sum()
    if n == 0:
        return float("nan")
    m = r["counts"] > 0
    return float(np.sum(r["counts"][m] / n * np.abs(r["observed"][m] - r["mean_predicted"][m])))


def brier(y, probs) -> float:
    """Mean squared error between predicted P(fake) and the 0/1 label."""
    y, p = _check(y, probs)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def fit_temperature(logits, y, bounds: tuple[float, float] = (0.05, 20.0), iters: int = 100) -> float:
    """Temperature T minimising the NLL of sigmoid(logits / T), by golden-section search on log T.

    The NLL is convex in 1/T, so it is unimodal in log T and the search finds the optimum within
    ``bounds`` (it returns a bound when the optimum lies beyond it).
    """
    y, z = _check(y, logits)
    if not len(y):
        raise ValueError("need data to fit a temperature")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    f = lambda u: _nll(y, z / np.exp(u))  # noqa: E731
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
        if hi - lo < 1e-10:
            break
    # compare with the bounds themselves, where the interior points never reach
    cands = [(f(np.log(bounds[0])), bounds[0]), (f((lo + hi) / 2), float(np.exp((lo + hi) / 2))),
             (f(np.log(bounds[1])), bounds[1])]
    return float(min(cands)[1])


def fit_platt(x, y, l2: float = 0.0, max_iter: int = 100, tol: float = 1e-10) -> tuple[float, float]:
    """Platt scaling: (a, b) of P(fake) = sigmoid(a * x + b), by Newton's method on the NLL.

    ``x`` is one feature (a score or a logit). ``l2`` adds l2 * a**2 / 2 to the summed NLL (the
    intercept is not penalised); some penalty is needed when the classes are separable.
    """
    y, x = _check(y, x)
    if not len(y):
        raise ValueError("need data to fit Platt scaling")
    X = np.stack([x, np.ones_like(x)], axis=1)
    reg = np.array([l2, 0.0])
    w = np.array([0.0, logit((y.sum() + 0.5) / (len(y) + 1.0))])  # start from the base rate

    def loss(w):
        z = X @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(reg * w * w))

    cur = loss(w)
    for _ in range(max_iter):
        p = sigmoid(X @ w)
        grad = X.T @ (p - y) + reg * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(reg) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking keeps every step a descent step
            new = loss(w - t * step)
            if new <= cur or t < 1e-8:
                break
            t /= 2
        w, prev, cur = w - t * step, cur, new
        if abs(prev - cur) <= tol * max(1.0, abs(cur)) and np.max(np.abs(t * step)) < 1e-8:
            break
    return float(w[0]), float(w[1])


def apply_calibration(probs, calibration: dict | None) -> np.ndarray:
    """A detector's stored calibration map applied to head probabilities (float32, the one code
    path for scoring and for fitting thresholds, so both see the same numbers)."""
    p = np.asarray(probs, dtype=np.float32)
    if not calibration:
        return p
    z = logit(p)
    z = calibration["a"] * z + calibration["b"] if calibration["kind"] == "platt" else z / calibration["t"]
    return np.asarray(sigmoid(z), dtype=np.float32)



def invert_calibration(probs, calibration: dict | None) -> np.ndarray:
    """The head probabilities that `apply_calibration` maps to `probs` (its inverse)."""
    q = np.asarray(probs, dtype=np.float64)
    if not calibration:
        return q
    z = logit(q)
    z = (z - calibration["b"]) / calibration["a"] if calibration["kind"] == "platt" else z * calibration["t"]
    return sigmoid(z)


CALIBRATION_METHODS = ("platt", "temperature", "none")


def fit_calibration(y, probs, method: str) -> dict | None:
    """The calibration map (as `apply_calibration` reads it) fitted on labelled P(fake):
    platt (a * logit + b, lightly L2-regularised), temperature (logit / T) or none (None)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if method == "none":
        return None
    y, p = _check(y, probs)
    if len(set(y.tolist())) < 2:
        raise ValueError("score calibration needs real and fake images")
    if method == "platt":
        a, b = fit_platt(logit(p), y, l2=1e-3)
        return {"kind": "platt", "a": float(a), "b": float(b)}
    return {"kind": "temperature", "t": float(fit_temperature(logit(p), y))}


def calibration_quality(y, probs) -> dict | None:
    """ECE, Brier score and log loss; None unless both classes are present."""
    y, p = _check(y, probs)
    if len(set(y.tolist())) < 2:
        return None
    return {"ece": ece(y, p), "brier": brier(y, p), "nll": log_loss(y, p)}
