"""Losses of the "robust CLIP-based detector" (Purdue): CVaR of BCE plus a pairwise AUC surrogate.

Plain mean BCE is dominated by the many easy samples; CVaR puts the weight on the
hardest ones (distributionally robust), and the AUC term optimises the ranking of
fakes above reals directly, which is what a threshold-free metric and an imbalanced
stream of images care about. All functions are pure torch and differentiable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


CVAR_CONVENTIONS = ("share", "quantile")


def cvar_tail(alpha: float, convention: str = "share") -> float:
    """The share of the worst losses that CVaR_alpha averages, under either reading of alpha.

    "share" (the Purdue paper and code): alpha is that share, CVaR = lambda + mean[(l - lambda)+] / alpha,
    so alpha = 0.8 averages the worst 80% and alpha = 1 is the plain mean. "quantile" (fakescope before
    issue 19): alpha is the quantile level, so alpha = 0.8 averages the worst 20% and alpha = 0 is the mean.
    """
    if convention == "share":
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha (share of worst losses) must be in (0, 1], got {alpha}")
        return float(alpha)
    if convention == "quantile":
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha (quantile level) must be in [0, 1), got {alpha}")
        return 1.0 - float(alpha)
    raise ValueError(f"CVaR convention must be one of {CVAR_CONVENTIONS}, got {convention!r}")


def _cvar_lambda(losses: torch.Tensor, tail: float) -> torch.Tensor:
    """The (1 - tail)-quantile of the losses: the ceil(n * tail)-th largest, which minimises the variational form.

    The element is chosen on detached losses, then gathered with its graph: so the boundary
    sample keeps its (fractional) CVaR weight instead of sitting on relu's kink with gradient 0,
    and the weights sum to 1, as for the sorted-top-k definition.
    """
    n = losses.numel()
    k = min(n, max(1, math.ceil(n * tail - 1e-9)))  # 1e-9: n*tail that is an integer up to rounding
    idx = torch.topk(losses.detach(), k).indices[-1]
    return losses[idx]


def cvar_loss(losses: torch.Tensor, alpha: float = 0.8, convention: str = "share") -> torch.Tensor:
    """CVaR of per-sample losses: the mean of the worst `cvar_tail(alpha, convention)` share of them.

    Computed through the variational form  min_lambda  lambda + mean(relu(l - lambda)) / tail,
    whose minimiser is the (1 - tail)-quantile of the losses; lambda is taken there, in closed form
    (no inner search, where the Purdue code runs scipy's fminbound; envelope theorem: the gradient is
    that of the optimised form). A boundary sample gets a fractional weight when n * tail is not an
    integer, as in the continuous definition.
    """
    tail = cvar_tail(alpha, convention)
    losses = losses.reshape(-1)
    if losses.numel() == 0:
        return losses.sum()
    lam = _cvar_lambda(losses, tail)
    return lam + F.relu(losses - lam).mean() / tail


def auc_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 0.6, power: float = 2) -> torch.Tensor:
    """Pairwise AUC surrogate: mean over all (fake, real) pairs of relu(margin - (s_fake - s_real)) ** power.

    A smooth (power > 1) hinge on the ranking of every fake above every real by at least `margin`;
    the 0/1 AUC itself has no gradient. Scores are meant to be probabilities (margin in (0, 1]).
    A batch without one of the classes has no pairs: returns 0, still attached to the graph.
    """
    scores, y = scores.reshape(-1), y.reshape(-1)
    pos, neg = scores[y > 0.5], scores[y <= 0.5]
    if pos.numel() == 0 or neg.numel() == 0:
        return scores.sum() * 0.0
    gap = margin - (pos[:, None] - neg[None, :])
    return F.relu(gap).pow(power).mean()


def robust_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.8, gamma: float = 0.5,
                margin: float = 0.6, power: float = 2, auc_on: str = "prob",
                convention: str = "share") -> torch.Tensor:
    """gamma * CVaR_alpha(per-sample BCE) + (1 - gamma) * auc_loss(sigmoid(logits)).

    `auc_on="logit"` feeds the raw logits to the AUC term instead (what the authors' train.py does);
    `convention` is how alpha is read (`cvar_tail`).
    """
    logits, y = logits.reshape(-1), y.reshape(-1).to(logits.dtype)
    if auc_on not in ("prob", "logit"):
        raise ValueError(f"auc_on must be 'prob' or 'logit', got {auc_on!r}")
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    scores = torch.sigmoid(logits) if auc_on == "prob" else logits
    return gamma * cvar_loss(bce, alpha, convention) + (1.0 - gamma) * auc_loss(scores, y, margin, power)
