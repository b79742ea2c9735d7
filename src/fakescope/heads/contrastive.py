"""Contrastive losses as pure functions of a batch of embeddings (torch tensors in, scalar out).

Two losses shape a representation by *which samples should sit together*, not by a
fixed target, and several fakescope methods need exactly that:

* `supcon_loss` (Khosla et al. 2020, "Supervised Contrastive Learning"): pull together
  every pair with the same label, push apart pairs with different labels. Used to
  train an embedding whose geometry is organised by real/fake (the low-level head of
  the "Parents and Children" analysis, CoDE-style detectors, "real images as judge").
* `info_nce` (van den Oord et al. 2018; symmetric as in CLIP, Radford et al. 2021):
  pair i of `a` must match pair i of `b` against the rest of the batch. Used to align
  an image projection with its caption (the semantic head), i.e. to learn what is
  *content* rather than what is *real or fake*.

Both L2-normalise their inputs (cosine similarity), so the temperature alone sets
how sharp the softmax is; the temperature may be a float or a 0-d tensor (learnable).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float | torch.Tensor = 0.1) -> torch.Tensor:
    """Supervised contrastive loss ("L_out" of Khosla et al. 2020, eq. 2) over one batch.

    z: (N, d) embeddings (normalised here); labels: (N,) integer or 0/1 labels.
    For each anchor i, with A(i) = every other sample and P(i) = the others with i's label:

        loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )

    and the loss is the mean of loss_i over the anchors that have at least one positive.
    Anchors without a positive (the only sample of their label in the batch) contribute
    nothing: they have no pair to pull towards, and their negatives still appear in the
    other anchors' denominators. If no anchor has a positive (N < 2, or all labels
    distinct) the loss is 0 (still differentiable, with zero gradient).
    With all labels equal every other sample is a positive; the loss is then
    log(N - 1) at best (all similarities equal) - it no longer separates anything, it
    only pulls the batch together, which is the documented behaviour, not an error.
    """
    z = F.normalize(z, dim=1)
    labels = labels.reshape(-1)
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    sim = (z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))        # exclude i from its own denominator
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    # log_prob is -inf only on the diagonal, which pos excludes; zero it before the product
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss): row i of `a` and row i of `b` are the positive pair.

    a, b: (N, d) embeddings (normalised here). logits = a @ b.T / temperature; the loss is
    the mean of cross-entropy over rows (a -> b) and over columns (b -> a), each with
    target i for row i; the other N - 1 rows of the batch are the negatives. Symmetric
    so neither side can collapse while the other does the work. N = 1 gives 0.

    groups (N,): rows of one family (a real photo and the fakes made from it or its caption)
    are all positives of each other instead of negatives: with P(i) = {j : g_j = g_i},

        row_i = -1/|P(i)| * sum_{j in P(i)} log softmax_j(logits_i.)

    and likewise over columns; all-distinct groups give the plain loss.
    """
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    logits = (a @ b.T) / temperature
    if groups is None:
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    groups = groups.reshape(-1)
    pos = (groups[:, None] == groups[None, :]).to(logits.dtype)
    rows = -(pos * F.log_softmax(logits, dim=1)).sum(1) / pos.sum(1)
    cols = -(pos * F.log_softmax(logits, dim=0)).sum(0) / pos.sum(0)
    return 0.5 * (rows.mean() + cols.mean())


__all__ = ["info_nce", "supcon_loss"]
