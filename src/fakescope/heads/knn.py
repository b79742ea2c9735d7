"""Cosine k-nearest-neighbour head: P(fake) = similarity-weighted share of fakes among the k
training embeddings nearest to the image. CoDE's published head is k = 1 (scikit-learn's exact
cosine 1-NN): with k = 1 the vote is the nearest reference's label, so P(fake) > 0.5 exactly when
1-NN says fake; k = 10 weighted is fakescope's variant.

State: the L2-normalised reference embeddings and their labels, as arrays. Weights
exp(cos / temperature) (as in DINO's k-NN evaluation) make the vote continuous. When all k
neighbours agree the vote is exactly 0 or 1 for many images, and a threshold set on reals cannot
fall between tied scores; so 1% of the score is a tie-breaker, the margin between the mean
similarity to the k nearest fakes and to the k nearest reals:

    P(fake) = 0.99 * vote + 0.01 * sigmoid((mean_k cos(fakes) - mean_k cos(reals)) / 0.25)
"""
from __future__ import annotations

import numpy as np

from .registry import register


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


@register
class KNNHead:
    method = "knn"

    def __init__(self, k: int = 10, temperature: float = 0.1, seed: int = 0):
        if int(k) < 1:
            raise ValueError("knn: k must be at least 1")
        self.k, self.temperature, self.seed = int(k), float(temperature), seed
        self.refs: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        self.refs = _unit(X)
        self.labels = np.asarray(y, np.float32).reshape(-1)
        return {"k": self.k, "n_refs": int(len(self.refs)), "n_fake_refs": int(self.labels.sum())}

    def neighbours(self, X: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices) of the k nearest references of each row, most similar first."""
        Q = _unit(X)
        k = min(self.k, len(self.refs))
        sims, idx = [], []
        for i in range(0, len(Q), chunk):
            s = Q[i:i + chunk] @ self.refs.T
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            st = np.take_along_axis(s, top, 1)
            order = np.argsort(-st, axis=1)
            sims.append(np.take_along_axis(st, order, 1))
            idx.append(np.take_along_axis(top, order, 1))
        return (np.concatenate(sims), np.concatenate(idx)) if sims else (np.zeros((0, k)), np.zeros((0, k), int))

    def vote(self, X: np.ndarray) -> np.ndarray:
        """Similarity-weighted share of fakes among the k nearest references."""
        s, idx = self.neighbours(X)
        w = np.exp((s - s[:, :1]) / self.temperature)
        return (w * self.labels[idx]).sum(1) / w.sum(1)

    def margin(self, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Mean cosine to the k nearest fake references minus that to the k nearest real ones."""
        Q = _unit(X)
        out = np.zeros(len(Q), np.float64)
        parts = [self.refs[self.labels == c] for c in (1, 0)]
        if any(len(p) == 0 for p in parts):
            return out
        for i in range(0, len(Q), chunk):
            m = []
            for P in parts:
                k = min(self.k, len(P))
                s = Q[i:i + chunk] @ P.T
                m.append(np.partition(-s, k - 1, axis=1)[:, :k].mean(1) * -1)
            out[i:i + chunk] = m[0] - m[1]
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        tie = 1.0 / (1.0 + np.exp(-self.margin(X) / 0.25))   # margin in [-2, 2]: never saturates
        return 0.99 * self.vote(X) + 0.01 * tie

    def config(self) -> dict:
        return {"k": self.k, "temperature": self.temperature, "dim": int(self.refs.shape[1]) if self.refs is not None else 0}

    def state(self) -> dict[str, np.ndarray]:
        return {"refs": self.refs, "labels": self.labels}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "KNNHead":
        head = cls(k=config["k"], temperature=config.get("temperature", 0.1))
        head.refs, head.labels = state["refs"].astype(np.float32), state["labels"].astype(np.float32)
        return head
