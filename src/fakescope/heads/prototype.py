"""Distance-to-the-real-cluster head ("real images as judge"): an image is as fake as it is far
from the real images' prototypes.

fit: K unit prototypes by spherical k-means over the L2-normalised REAL training embeddings
(K = 1: the normalised mean, the centre of the real cluster); distance d(x) = 1 - max_k cos(x, c_k).
P(fake) = sigmoid(a * d + b), with (a, b) fitted by Platt scaling on the training distances when
fakes are given (a monotone map: the ranking is the distance's own), else a sigmoid centred on the
95th percentile of the reals' distances. Fakes never move the prototypes.
"""
from __future__ import annotations

import numpy as np

from .registry import register


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(X: np.ndarray, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """k unit centres of the unit rows of X (k-means++ seeding on cosine distance)."""
    X = _unit(X)
    k = max(1, min(int(k), len(X)))
    rng = np.random.default_rng(seed)
    C = [X[rng.integers(len(X))]]
    for _ in range(1, k):
        d = np.clip(1 - (X @ np.stack(C).T).max(1), 0, None) ** 2
        C.append(X[rng.choice(len(X), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(X))])
    C = np.stack(C)
    for _ in range(iters):
        a = (X @ C.T).argmax(1)
        C = _unit(np.stack([X[a == j].sum(0) if (a == j).any() else C[j] for j in range(k)]))
    return C.astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


MAX_SLOPE = 4.0  # per standard deviation of the score: the logit spans about +-12 over the data, never saturating


def fit_score_map(s: np.ndarray, y: np.ndarray | None, real_quantile: float = 0.95) -> tuple[float, float]:
    """(a, b) of P(fake) = sigmoid(a * s + b) for a score s that grows with fakeness: Platt scaling
    on (s, y) when both classes are present (on the standardised score), else a sigmoid through 0.5
    at the given quantile of the reals' scores, with their spread as scale.

    The slope is capped at MAX_SLOPE per standard deviation (the intercept refitted under the cap):
    on well separated training data Platt's slope grows without bound, the sigmoid saturates to
    exactly 1.0 for many images, and tied scores can no longer be ranked or thresholded."""
    from ..evaluation.calibration import fit_platt
    s = np.asarray(s, np.float64)
    mu, sd = float(s.mean()), float(s.std()) + 1e-12
    if y is not None and len(set(np.asarray(y).tolist())) == 2:
        z, t = (s - mu) / sd, np.asarray(y, np.float64)
        a, b = fit_platt(z, t, l2=1e-2)
        if a > MAX_SLOPE:
            a = MAX_SLOPE
            lo, hi = -60.0, 60.0  # the NLL's derivative in b, sum(p - t), increases with b: bisection
            for _ in range(100):
                b = 0.5 * (lo + hi)
                if (_sigmoid(a * z + b) - t).sum() > 0:
                    hi = b
                else:
                    lo = b
        return float(a / sd), float(b - a * mu / sd)
    real = s if y is None else s[np.asarray(y) == 0]
    a = 1.0 / (float(real.std()) + 1e-6)
    return a, -a * float(np.quantile(real, real_quantile))


@register
class DistanceHead:
    method = "distance"

    def __init__(self, prototypes: int = 1, seed: int = 0, centres: np.ndarray | None = None):
        """centres: fixed unit directions to measure the distance to (the natural traces a
        natural-traces run learned); None: spherical k-means of the real training embeddings."""
        self.k, self.seed = (int(prototypes) if centres is None else len(centres)), seed
        self.centres: np.ndarray | None = None if centres is None else _unit(centres)
        self.centres_from = "real-kmeans" if centres is None else "given"
        self.a, self.b = 1.0, 0.0

    def distance(self, X: np.ndarray) -> np.ndarray:
        return 1.0 - (_unit(X) @ self.centres.T).max(1)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        y = np.asarray(y)
        real = X[y == 0]
        if not len(real):
            raise ValueError("distance head: needs real images to fit the real cluster")
        if self.centres_from == "real-kmeans":
            self.centres = spherical_kmeans(real, self.k, seed=self.seed)
        d = self.distance(X)
        self.a, self.b = fit_score_map(d, y)
        return {"prototypes": int(len(self.centres)), "centres_from": self.centres_from,
                "mean_distance_real": float(d[y == 0].mean()),
                "mean_distance_fake": float(d[y == 1].mean()) if (y == 1).any() else None}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * self.distance(X) + self.b)

    def config(self) -> dict:
        return {"prototypes": self.k, "a": self.a, "b": self.b, "centres_from": self.centres_from,
                "dim": int(self.centres.shape[1]) if self.centres is not None else 0}

    def state(self) -> dict[str, np.ndarray]:
        return {"centres": self.centres}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "DistanceHead":
        head = cls(prototypes=config.get("prototypes", 1))
        head.centres = state["centres"].astype(np.float32)
        head.centres_from = config.get("centres_from", "real-kmeans")
        head.a, head.b = float(config["a"]), float(config["b"])
        return head
