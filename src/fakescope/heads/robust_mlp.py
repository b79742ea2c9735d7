"""Robust MLP head: the Purdue "Robust CLIP-based detector" recipe on frozen features.

An MLP (Linear-BatchNorm-LeakyReLU-Dropout per hidden layer, then Linear) on standardised
features, trained with gamma * CVaR(BCE) + (1 - gamma) * pairwise AUC loss (see
losses.py) and Sharpness-Aware Minimization over AdamW (see sam.py). The epoch kept
is the best one by AUC on a group-disjoint held-out split (views of one image stay on
one side), so nothing is refit. Batches are class-stratified, since the AUC term
needs (fake, real) pairs in every batch.

Two configurations (`preset=`):
- "fakescope" (the default): hidden 512, 128; dropout 0.5; AdamW wd 1e-4, constant lr; batch 256;
  AUC term on probabilities; early stopping (patience 10). Sized for the few thousand training
  images of this project's CPU runs, where 3 x 1536 units over-fit and batch 2048 is a handful of
  steps per epoch; the AUC margin 0.6 is meaningful on probabilities, less so on unbounded logits.
- "purdue" (the paper's head, DFAD_model_base.py + train.py): hidden 1536 x 3, Kaiming-uniform
  weights, dropout 0.335; AdamW lr 1e-3 wd 0.01 with a cosine schedule (period epochs/4 = 8 epochs,
  min lr 1e-5, as their CosineAnnealingLR(T_max=num_epochs/4)); 32 epochs, batch 2048; gamma 0.5,
  CVaR alpha 0.8 (worst 80%), AUC term on logits (margin 0.6, power 2); SAM rho 0.05.
Both read CVaR's alpha as the paper does (`alpha_convention="share"`); heads saved before that
option existed used the quantile reading and load with it (`from_state`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data.splits import HEAD_SPLIT, split_by_group
from .registry import register
from .losses import cvar_tail, robust_loss
from .sam import SAM

_PREDICT_CHUNK = 8192


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from ..evaluation.metrics import roc_auc
    return roc_auc(y, scores)


def build_mlp(dim: int, hidden: list[int], dropout: float, negative_slope: float = 0.01,
              init: str = "torch") -> nn.Sequential:
    """Module indices are those of the old two-layer build, so heads saved by it still load."""
    layers: list[nn.Module] = []
    width = dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1))
    net = nn.Sequential(*layers)
    if init == "kaiming":  # the Purdue model's "he initialization", output layer included
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
    elif init != "torch":
        raise ValueError(f"init must be 'torch' or 'kaiming', got {init!r}")
    return net


def cosine_lr(epoch: int, lr: float, min_lr: float, period: int) -> float:
    """Learning rate after `epoch` epochs: min_lr + (lr - min_lr) (1 + cos(pi epoch / period)) / 2.

    Past `period` it goes back up, as torch's CosineAnnealingLR does when stepped beyond T_max
    (the Purdue trainer sets T_max = epochs / 4, so its lr falls and rises twice over a run).
    """
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * epoch / period)) / 2.0


def stratified_batches(y: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches, each with the overall fake/real mix (and both classes when possible)."""
    fake, real = rng.permutation(np.flatnonzero(y > 0.5)), rng.permutation(np.flatnonzero(y <= 0.5))
    nb = max(1, math.ceil(len(y) / batch_size))
    if len(fake) and len(real):
        nb = min(nb, len(fake), len(real))
    return [rng.permutation(np.concatenate([f, r]))
            for f, r in zip(np.array_split(fake, nb), np.array_split(real, nb))]


def _as_bool(v) -> bool:
    """Options may arrive as text (e.g. from a command line): "false" must not become True."""
    if isinstance(v, str):
        if v.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"not a boolean: {v!r}")
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _set_bn_momentum(net: nn.Module, momentum: float | None, saved: dict | None = None) -> dict:
    """SAM's second forward pass must not update BatchNorm running statistics twice."""
    old = {}
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            old[m] = m.momentum
            m.momentum = saved[m] if saved is not None else momentum
    return old


PRESETS: dict[str, dict] = {
    "fakescope": dict(hidden=[512, 128], dropout=0.5, negative_slope=0.01, init="torch", alpha=0.8,
                      alpha_convention="share", gamma=0.5, margin=0.6, power=2, auc_on="prob", sam=True,
                      rho=0.05, lr=1e-3, weight_decay=1e-4, schedule="constant", schedule_period=None,
                      min_lr=0.0, epochs=30, batch_size=256, holdout=0.15, patience=10, seed=0),
    "purdue": dict(hidden=[1536, 1536, 1536], dropout=0.335, negative_slope=0.01, init="kaiming", alpha=0.8,
                   alpha_convention="share", gamma=0.5, margin=0.6, power=2, auc_on="logit", sam=True,
                   rho=0.05, lr=1e-3, weight_decay=0.01, schedule="cosine", schedule_period=8,
                   min_lr=1e-5, epochs=32, batch_size=2048, holdout=0.15, patience=None, seed=0),
}


@register
class RobustMLP:
    method = "robust-mlp"

    def __init__(self, preset: str = "fakescope", **options):
        """Options override the preset's values (`PRESETS`). `h1`, `h2` are the two hidden widths
        of heads saved before `hidden` existed."""
        if preset not in PRESETS:
            raise ValueError(f"unknown robust-mlp preset {preset!r}; known: {', '.join(PRESETS)}")
        if "h1" in options or "h2" in options:
            if "hidden" in options:
                raise ValueError("give either hidden=[...] or h1/h2, not both")
            options["hidden"] = [options.pop("h1", PRESETS["fakescope"]["hidden"][0]),
                                 options.pop("h2", PRESETS["fakescope"]["hidden"][1])]
        unknown = set(options) - set(PRESETS[preset])
        if unknown:
            raise TypeError(f"unknown robust-mlp option(s): {', '.join(sorted(unknown))}")
        o = {**PRESETS[preset], **options}
        if not 0.0 <= float(o["gamma"]) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {o['gamma']}")
        if o["auc_on"] not in ("prob", "logit"):
            raise ValueError(f"auc_on must be 'prob' or 'logit', got {o['auc_on']!r}")
        if o["schedule"] not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {o['schedule']!r}")
        cvar_tail(float(o["alpha"]), o["alpha_convention"])  # validates alpha under its convention
        self.preset = preset
        hidden = o["hidden"]
        self.hidden = [int(h) for h in ([hidden] if isinstance(hidden, (int, float)) else hidden)]
        self.dropout, self.negative_slope, self.init = float(o["dropout"]), float(o["negative_slope"]), o["init"]
        self.alpha, self.alpha_convention = float(o["alpha"]), o["alpha_convention"]
        self.gamma, self.margin, self.auc_on = float(o["gamma"]), float(o["margin"]), o["auc_on"]
        self.power = o["power"]
        self.sam, self.rho, self.lr = _as_bool(o["sam"]), float(o["rho"]), float(o["lr"])
        self.weight_decay, self.schedule, self.min_lr = float(o["weight_decay"]), o["schedule"], float(o["min_lr"])
        self.schedule_period = None if o["schedule_period"] is None else int(o["schedule_period"])
        self.epochs, self.batch_size, self.holdout = int(o["epochs"]), int(o["batch_size"]), float(o["holdout"])
        self.patience = None if o["patience"] is None else int(o["patience"])
        self.seed = int(o["seed"])
        self.mean = self.std = None
        self.net: nn.Sequential | None = None
        self.dim: int | None = None

    # ------------------------------------------------------------ training
    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return robust_loss(logits, y, self.alpha, self.gamma, self.margin, self.power, self.auc_on,
                           self.alpha_convention)

    def _train_epoch(self, opt: torch.optim.Optimizer, Z: torch.Tensor, t: torch.Tensor, y: np.ndarray,
                     rng: np.random.Generator) -> float:
        net = self.net
        net.train()
        total, n = 0.0, 0
        for b in stratified_batches(y, self.batch_size, rng):
            if len(b) < 2:  # BatchNorm cannot train on a single sample
                continue
            xb, yb = Z[b], t[b]
            loss = self._loss(net(xb).squeeze(1), yb)
            opt.zero_grad()
            loss.backward()
            if self.sam:
                opt.first_step(zero_grad=True)
                saved = _set_bn_momentum(net, 0.0)
                self._loss(net(xb).squeeze(1), yb).backward()
                _set_bn_momentum(net, None, saved)
                opt.second_step(zero_grad=True)
            else:
                opt.step()
            total += float(loss.detach()) * len(b)
            n += len(b)
        return total / max(n, 1)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        X = np.asarray(X, np.float32)
        y = (np.asarray(y) > 0.5).astype(np.float32)
        if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"need X of shape (n >= 2, d) and n labels, got {X.shape} and {y.shape}")
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        rng = np.random.default_rng(self.seed)
        held = split_by_group(groups, self.holdout, self.seed, labels=y, salt=HEAD_SPLIT)
        if len(np.unique(y[held])) < 2 or len(np.unique(y[~held])) < 2 or (~held).sum() < 2:
            held[:] = False  # no usable held-out split: train on everything, keep the last epoch
        tr = ~held

        self.mean = X[tr].mean(0)
        self.std = X[tr].std(0) + 1e-6
        self.dim = X.shape[1]
        Z = torch.from_numpy((X - self.mean) / self.std)
        t = torch.from_numpy(y)
        history: list[float] = []
        best = (-math.inf, -math.inf)
        best_epoch, best_state, stale = self.epochs, None, 0

        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.net = build_mlp(self.dim, self.hidden, self.dropout, self.negative_slope, self.init)
            params = self.net.parameters()
            if self.sam:
                opt = SAM(params, torch.optim.AdamW, rho=self.rho, lr=self.lr, weight_decay=self.weight_decay)
            else:
                opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
            Ztr, ttr, ytr = Z[tr], t[tr], y[tr]
            Zva, yva = Z[held], y[held]
            period = self.schedule_period or self.epochs
            for epoch in range(1, self.epochs + 1):
                train_loss = self._train_epoch(opt, Ztr, ttr, ytr, rng)
                if self.schedule == "cosine":  # stepped per epoch, as the Purdue trainer does
                    for group in opt.param_groups:
                        group["lr"] = cosine_lr(epoch, self.lr, self.min_lr, period)
                if not held.any():
                    history.append(round(train_loss, 5))
                    continue
                logits = self._logits(Zva)
                auc = _auc(yva, logits)
                bce = float(nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits),
                                                                          torch.from_numpy(yva)))
                history.append(round(auc, 5))
                if (auc, -bce) > best:  # ties in AUC -> lower held-out BCE
                    best, best_epoch, stale = (auc, -bce), epoch, 0
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    stale += 1
                    if self.patience is not None and stale >= self.patience:
                        break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        info = {"best_epoch": best_epoch, "epochs_run": len(history),
                "heldout_auc": round(best[0], 5) if held.any() else None,
                "heldout_n": int(held.sum()), "train_n": int(tr.sum()),
                "history": history, "history_metric": "heldout_auc" if held.any() else "train_loss",
                "preset": self.preset,
                "loss": {"alpha": self.alpha, "alpha_convention": self.alpha_convention, "gamma": self.gamma, "margin": self.margin, "power": self.power,
                         "auc_on": self.auc_on},
                "optimizer": {"sam": self.sam, "rho": self.rho if self.sam else None, "lr": self.lr,
                              "weight_decay": self.weight_decay, "schedule": self.schedule}}
        return info

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits(self, Z: torch.Tensor) -> np.ndarray:
        was_training = self.net.training
        self.net.eval()
        out = torch.cat([self.net(Z[i:i + _PREDICT_CHUNK]).squeeze(1) for i in range(0, len(Z), _PREDICT_CHUNK)]
                        ) if len(Z) else torch.zeros(0)
        self.net.train(was_training)
        return out.numpy().astype(np.float32)

    def decision(self, X: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("robust-mlp head is not fitted")
        X = np.asarray(X, np.float32).reshape(-1, self.dim)
        return self._logits(torch.from_numpy((X - self.mean) / self.std))

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.decision(X)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    # ------------------------------------------------------------ persistence
    _OPTIONS = tuple(PRESETS["fakescope"])

    def config(self) -> dict:
        cfg = {"preset": self.preset, **{k: getattr(self, k) for k in self._OPTIONS}}
        cfg["hidden"] = list(self.hidden)
        cfg["power"] = float(cfg["power"]) if not float(cfg["power"]).is_integer() else int(cfg["power"])
        cfg["dim"] = self.dim
        return cfg

    def state(self) -> dict[str, np.ndarray]:
        out = {"mean": np.asarray(self.mean, np.float32), "std": np.asarray(self.std, np.float32)}
        for k, v in self.net.state_dict().items():
            out["net." + k] = v.detach().cpu().numpy().copy()
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "RobustMLP":
        opts = {k: config[k] for k in cls._OPTIONS + ("h1", "h2") if k in config}
        # saved before alpha_convention existed: alpha was the quantile level (alpha 0.8 = worst 20%)
        opts.setdefault("alpha_convention", "quantile")
        head = cls(config.get("preset", "fakescope"), **opts)
        head.mean = np.asarray(state["mean"], np.float32)
        head.std = np.asarray(state["std"], np.float32)
        head.dim = int(config.get("dim") or head.mean.shape[0])
        head.net = build_mlp(head.dim, head.hidden, head.dropout, head.negative_slope)
        head.net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items()
                                  if k.startswith("net.")})
        head.net.eval()
        return head
