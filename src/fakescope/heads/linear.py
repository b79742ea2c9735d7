"""Linear probe (logistic regression) on standardised frozen features.

As in "Parents and Children" and UnivFD: the backbone stays frozen and one linear
layer reads its embedding. The L2 strength is swept on a held-out split (split by
group, so views of one image never sit on both sides), then refit on everything.

CoDE's logistic regression (`C=0.316 standardize=false`): scikit-learn's
LogisticRegression(C=0.316, class_weight="balanced") on the raw embedding, which minimises
0.5 |w|^2 + C sum_i c_i BCE_i with class weights c_i = n / (2 n_class); that is our balanced
mean loss plus 0.5 l2 |w|^2 with l2 = 1 / (n C) (the intercept is not penalised in either).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.splits import HEAD_SPLIT, split_by_group
from .registry import register


def _fit_logistic(X: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    n, d = X.shape
    w = torch.zeros(d, dtype=X.dtype, requires_grad=True)
    b = torch.zeros((), dtype=X.dtype, requires_grad=True)
    pos = y.mean().clamp(1e-6, 1 - 1e-6)
    weights = torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y, reduction="none")).mean()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    from ..evaluation.metrics import roc_auc
    return roc_auc(y, scores)


@register
class LinearProbe:
    method = "linear"

    def __init__(self, l2: float | None = None, l2_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0), seed: int = 0,
                 C: float | None = None, standardize: bool = True):
        if C is not None and l2 is not None:
            raise ValueError("linear: give l2 or C (scikit-learn's inverse strength), not both")
        self.l2, self.l2_grid, self.seed = l2, tuple(l2_grid), seed
        self.C, self.standardize = (None if C is None else float(C)), bool(standardize)
        self.mean = self.std = self.weight = None
        self.bias = 0.0

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.float32)
        self.mean = X.mean(0) if self.standardize else np.zeros(X.shape[1], np.float32)
        self.std = X.std(0) + 1e-6 if self.standardize else np.ones(X.shape[1], np.float32)
        Z = torch.from_numpy((X - self.mean) / self.std)
        if self.C is not None:
            self.l2 = 1.0 / (len(y) * self.C)
        t = torch.from_numpy(y)
        info: dict = {}
        if self.l2 is None:  # sweep on a group-disjoint 20% split
            groups = np.arange(len(y)) if groups is None else np.asarray(groups)
            held = split_by_group(groups, 0.2, self.seed, labels=y, salt=HEAD_SPLIT)
            tr, va = torch.from_numpy(~held), torch.from_numpy(held)
            sweep = {}
            for l2 in self.l2_grid:
                w, b = _fit_logistic(Z[tr], t[tr], l2)
                sweep[l2] = _auc((Z[va] @ w + b).numpy(), y[held])
            self.l2 = max(sweep, key=lambda k: (sweep[k], k))  # ties -> stronger regularisation
            info["l2_sweep_auc"] = {str(k): round(v, 4) for k, v in sweep.items()}
        w, b = _fit_logistic(Z, t, self.l2)
        self.weight, self.bias = w.numpy(), float(b)
        info["l2"] = self.l2
        return info

    def decision(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, np.float32) - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(X)))

    def config(self) -> dict:
        return {"l2": self.l2, "C": self.C, "standardize": self.standardize, "dim": int(self.weight.shape[0])}

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "weight": self.weight,
                "bias": np.asarray([self.bias], np.float32)}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "LinearProbe":
        head = cls(l2=config.get("l2"))
        head.mean, head.std, head.weight = state["mean"], state["std"], state["weight"]
        head.bias = float(state["bias"][0])
        return head
