"""Multi-layer probe: learned weighting of several encoder blocks (RINE-style).

RINE ("Leveraging Representations from Intermediate Encoder-blocks for Synthetic
Image Detection", Koutlis & Papadopoulos 2024) observes that low-level traces of
generation live in the *intermediate* blocks of a frozen encoder more than in its
final embedding, and reads them through a learned importance over blocks.

Here X is [pooled embedding, class token of layer l1, l2, ...] (see
`fakescope.features.feature_vector`), i.e. consecutive blocks of sizes `blocks`:

    x_b   -> standardise (per block)  -> Linear_b(size_b -> proj_dim)      (one per block,
    h      = sum_b softmax(alpha)_b * proj_b                                 sizes may differ)
    logit  = Linear(proj_dim -> 1)(Dropout(GELU(Linear(proj_dim -> proj_dim)(h))))

trained with class-balanced BCE and AdamW (alpha at `alpha_lr_mult` x the learning
rate and without weight decay, so the importance can move within a short run). The
epoch kept is the one with the best ROC-AUC on a group-disjoint 15% held-out split
(data/splits.py: views of one image, or a family, never sit on both sides); training stops
after `patience` epochs without improvement. softmax(alpha) is reported as
`block_weights` (in fit's info and in the config).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..data.splits import HEAD_SPLIT, split_by_group
from .registry import register

HOLDOUT_FRACTION = 0.15


def group_holdout(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray | None:
    """Boolean mask of a group-disjoint held-out split, or None when no useful split exists
    (fewer than 2 groups, or one side missing a class)."""
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(np.unique(groups)) < 2:
        return None
    held = split_by_group(groups, fraction, seed, labels=y, salt=HEAD_SPLIT)
    if len(np.unique(y[held])) < 2 or len(np.unique(y[~held])) < 2:
        return None
    return held


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from ..evaluation.metrics import roc_auc
    return roc_auc(y, scores)


def balanced_weights(y: torch.Tensor, fit_on: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weights that give both classes equal total weight (class rate taken from `fit_on`)."""
    pos = (y if fit_on is None else fit_on).mean().clamp(1e-6, 1 - 1e-6)
    return torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))


class _MultiLayerNet(nn.Module):
    def __init__(self, blocks: list[int], proj_dim: int, dropout: float):
        super().__init__()
        self.blocks = list(blocks)
        self.proj = nn.ModuleList([nn.Linear(b, proj_dim) for b in self.blocks])
        self.alpha = nn.Parameter(torch.zeros(len(self.blocks)))  # uniform importance at start
        self.mlp = nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(proj_dim, 1))

    def block_weights(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.blocks, dim=1)
        w = self.block_weights()
        h = sum(w[i] * p(part) for i, (p, part) in enumerate(zip(self.proj, parts)))
        return self.mlp(h).squeeze(1)


@register
class MultiLayerProbe:
    method = "multilayer"
    needs_blocks = True  # config blocks: the widths of [pooled, layer l1, l2, ...], from the backbone

    def __init__(self, blocks: list[int] | None = None, proj_dim: int = 128, epochs: int = 40, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0, patience: int = 10,
                 dropout: float = 0.2, alpha_lr_mult: float = 10.0):
        self.blocks = None if blocks is None else [int(b) for b in blocks]
        self.proj_dim, self.epochs = int(proj_dim), int(epochs)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.batch_size, self.seed, self.patience = int(batch_size), int(seed), int(patience)
        self.dropout, self.alpha_lr_mult = float(dropout), float(alpha_lr_mult)
        self.mean = self.std = None
        self.net: _MultiLayerNet | None = None

    # ------------------------------------------------------------ training
    def _check_blocks(self, dim: int) -> None:
        if not self.blocks:
            raise ValueError("the multilayer head needs `blocks` (the sizes of the pooled embedding and of each "
                             "intermediate layer in X): use a backbone spec with `?layers=...`, e.g. "
                             "hf-dinov2:/models/dinov2-small?layers=4,8")
        if any(b <= 0 for b in self.blocks) or sum(self.blocks) != dim:
            raise ValueError(f"blocks {self.blocks} sum to {sum(self.blocks)}, but X has {dim} columns")

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.float32).reshape(-1)
        self._check_blocks(X.shape[1])
        if len(np.unique(y)) < 2:
            raise ValueError("the multilayer head needs both real (0) and fake (1) samples")
        self.mean = X.mean(0)
        self.std = X.std(0) + 1e-6
        Z = torch.from_numpy((X - self.mean) / self.std)
        t = torch.from_numpy(y)
        held = group_holdout(y, groups, HOLDOUT_FRACTION, self.seed)
        tr = np.flatnonzero(~held) if held is not None else np.arange(len(y))
        va = np.flatnonzero(held) if held is not None else None

        rng = np.random.default_rng(self.seed)
        info: dict = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _MultiLayerNet(self.blocks, self.proj_dim, self.dropout)
            others = [p for n, p in net.named_parameters() if n != "alpha"]
            opt = torch.optim.AdamW([{"params": others},
                                     {"params": [net.alpha], "lr": self.lr * self.alpha_lr_mult, "weight_decay": 0.0}],
                                    lr=self.lr, weight_decay=self.weight_decay)
            weights = balanced_weights(t, fit_on=t[tr])
            best_auc, best_epoch, best_state, history = -1.0, 0, None, []
            epoch = 0
            for epoch in range(1, self.epochs + 1):
                net.train()
                order = tr[rng.permutation(len(tr))]
                for start in range(0, len(order), self.batch_size):
                    idx = torch.from_numpy(order[start:start + self.batch_size])
                    loss = (weights[idx] * nn.functional.binary_cross_entropy_with_logits(
                        net(Z[idx]), t[idx], reduction="none")).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                if va is None:
                    continue
                auc = _auc(y[va], self._logits(net, Z[torch.from_numpy(va)]))
                history.append(round(auc, 4))
                if auc > best_auc:
                    best_auc, best_epoch, best_state = auc, epoch, copy.deepcopy(net.state_dict())
                elif epoch - best_epoch >= self.patience:
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
        net.eval()
        self.net = net
        info["epochs_run"] = epoch
        if va is not None:
            info.update(best_epoch=best_epoch, heldout_auc=round(best_auc, 4), heldout_auc_by_epoch=history,
                        heldout_n=int(len(va)))
        else:
            info["note"] = "no group-disjoint held-out split with both classes: trained all epochs, no early stopping"
        info["block_weights"] = self.block_weights()
        return info

    @staticmethod
    def _logits(net: _MultiLayerNet, Z: torch.Tensor) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return np.concatenate([net(Z[i:i + 4096]).numpy() for i in range(0, len(Z), 4096)]) if len(Z) else \
                np.zeros(0, np.float32)

    # ------------------------------------------------------------ inference
    def block_weights(self) -> list[float]:
        with torch.no_grad():
            return [round(float(v), 6) for v in self.net.block_weights()]

    def decision(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float32)
        if X.ndim == 1:
            X = X[None]
        return self._logits(self.net, torch.from_numpy((X - self.mean) / self.std))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(X).astype(np.float64)))

    # ------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"blocks": self.blocks, "proj_dim": self.proj_dim, "epochs": self.epochs, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "seed": self.seed,
                "patience": self.patience, "dropout": self.dropout, "alpha_lr_mult": self.alpha_lr_mult,
                "block_weights": self.block_weights() if self.net is not None else None}

    def state(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().numpy().astype(np.float32) for k, v in self.net.state_dict().items()}
        out["mean"], out["std"] = self.mean.astype(np.float32), self.std.astype(np.float32)
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "MultiLayerProbe":
        cfg = {k: v for k, v in config.items() if k != "block_weights"}
        head = cls(**cfg)
        head._check_blocks(int(state["mean"].shape[0]))
        head.mean, head.std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
        head.net = _MultiLayerNet(head.blocks, head.proj_dim, head.dropout)
        head.net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items()
                                  if k.startswith("net.")})
        head.net.eval()
        return head

