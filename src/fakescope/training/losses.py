"""Losses of the trained embeddings, as pure functions of a (global) batch of embeddings.

* `code_loss`: CoDE's two InfoNCE terms (Baraldi et al., ECCV 2024), image-to-image and local-to-global,
  anchored on BOTH classes.
* `nt_xent`: SimCLR's NT-Xent over two views per image: stage 1 of "natural traces" (reals only).
* `natural_traces_loss`: stage 2, an extended supervised contrastive loss with learnable real
  prototypes (the "natural traces") as extra members of the real class; fakes are only ever
  negatives. The exact formulation and why: the docstring of `natural_traces_loss`.

All inputs are L2-normalised here (cosine similarity); the temperature sets the softmax sharpness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..heads.contrastive import supcon_loss

REAL, FAKE = 0, 1


def _cross_class_infonce(query: torch.Tensor, keys: torch.Tensor, y: torch.Tensor, pos: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """Per-query InfoNCE where each positive key competes only with the keys of the other class:
    loss_i = mean_{p: pos[i, p]} -log( e^{s_ip} / (e^{s_ip} + sum_{n: y_n != y_i} e^{s_in}) ),
    s = cos / temperature (CoDE's `info_nce` with unpaired negative keys, one positive at a time)."""
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(keys.float(), dim=1)
    sim = (q @ k.T) / temperature
    same = y[:, None] == y[None, :]
    neg_lse = torch.logsumexp(sim.masked_fill(same, float("-inf")), dim=1, keepdim=True)  # -inf: no negative
    log_p = sim - torch.logaddexp(sim, neg_lse)                                             # (N, N)
    return -(log_p.masked_fill(~pos, 0.0)).sum(1) / pos.sum(1).clamp(min=1)


def same_class_derangement(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """index[i]: another image of i's class, a random cycle through each class (CoDE's roll_index,
    done within each class of a mixed batch); an image alone in its class in the batch keeps itself."""
    y = labels.reshape(-1).cpu()
    index = torch.arange(len(y))
    for cls in torch.unique(y):
        members = torch.nonzero(y == cls).squeeze(1)
        order = members[torch.randperm(len(members), generator=generator)]
        index[order] = torch.roll(order, -1)
    return index.to(labels.device)


def code_loss(local: torch.Tensor, global_: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
              positives: str = "pair", clean: torch.Tensor | None = None, augmented: torch.Tensor | None = None,
              pair_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """CoDE's objective (Baraldi et al., ECCV 2024): two InfoNCE terms per class, both classes anchored.

    Row i of every input comes from image i; labels (N,) 0 real / 1 fake; s = cos / temperature.

    Local term (local view -> global views): anchor l_i, positives P(i), negatives the global views
    of the other class:  loss_ip = -log( e^{s(l_i,g_p)} / (e^{s(l_i,g_p)} + sum_{n: y_n != y_i} e^{s(l_i,g_n)}) ),
    loss_i = mean_{p in P(i)} loss_ip. positives="pair" (CoDE): P(i) = {i}, the global crop of the same
    image. positives="class" (fakescope's earlier default): every global view of i's class.

    Image term (given `clean` and `augmented`): anchor the clean image c_i, positive the augmented
    view of ANOTHER image of its class, a_{pair_index[i]} (default `same_class_derangement`), negatives
    the augmented views of the other class. CoDE's features_real vs roll_index(features_augmented_real).

        L_c = (mean over anchors of class c of the image term + the same of the local term) / 2
        L   = (L_real + L_fake) / 2

    Both classes are anchors: the released trainer adds the real-anchored L twice and never the
    fake-anchored one, so fake images never act as queries; here they do, with equal weight. A class
    absent from the batch contributes no term; no negative at all gives 0.
    """
    y = labels.reshape(-1)
    n = len(y)
    if positives == "pair":
        pos = torch.eye(n, dtype=torch.bool, device=y.device)
    elif positives == "class":
        pos = y[:, None] == y[None, :]
    else:
        raise ValueError("positives must be 'class' or 'pair'")
    per_local = _cross_class_infonce(local, global_, y, pos, temperature)
    per_image = None
    if (clean is None) != (augmented is None):
        raise ValueError("the image term needs both clean and augmented views")
    if clean is not None:
        idx = same_class_derangement(y) if pair_index is None else pair_index.reshape(-1).to(y.device)
        pos_img = torch.zeros(n, n, dtype=torch.bool, device=y.device)
        pos_img[torch.arange(n, device=y.device), idx] = True
        per_image = _cross_class_infonce(clean, augmented, y, pos_img, temperature)
    terms, parts = [], {}
    for cls, name in ((REAL, "real"), (FAKE, "fake")):
        m = y == cls
        if bool(m.any()):
            t_local = per_local[m].mean()
            parts[f"loss_local_{name}"] = float(t_local.detach())
            t = t_local
            if per_image is not None:
                t_image = per_image[m].mean()
                parts[f"loss_image_{name}"] = float(t_image.detach())
                t = (t_image + t_local) / 2
            terms.append(t)
            parts[f"loss_{name}_anchored"] = float(t.detach())
    loss = torch.stack(terms).mean() if terms else (local.sum() + global_.sum()) * 0.0
    return loss, parts


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent: row i of z1 and row i of z2 (two views of image i) are positives, the
    other 2N-2 views negatives; the mean over all 2N anchors. This is SupCon with the image index
    as label, so it is computed by `supcon_loss`."""
    n = z1.shape[0]
    ids = torch.arange(n, device=z1.device)
    return supcon_loss(torch.cat([z1, z2]).float(), torch.cat([ids, ids]), temperature)


def natural_traces_loss(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                        temperature: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2 of "real images as judge": extended supervised contrastive loss.

    z: (M, d) embeddings (several views per image may be rows), labels (M,) 0 real / 1 fake,
    prototypes: (K, d) learnable "natural trace" vectors, initialised from the stage-1 embedding
    of reals (spherical k-means). All are L2-normalised; s(u, v) = cos(u, v) / t.

    Members: the M batch rows plus the K prototypes, which count as real. For an anchor a with
    positives P(a) and the set it is contrasted with A(a):

        loss_a = -1/|P(a)| * sum_{p in P(a)} log( exp(s(a,p)) / sum_{q in A(a)} exp(s(a,q)) )

      real row i:   P(i) = other real rows + all prototypes;  A(i) = all other rows + all prototypes
      prototype k:  P(k) = real rows;                         A(k) = all rows (not the other prototypes)
      fake row:     not an anchor.

        L = mean_{real rows i} loss_i + mean_k loss_k

    What is extended relative to SupCon (Khosla et al. 2020): (1) the prototypes are extra real
    members every real is pulled to, and anchors that pull the batch's reals to themselves, so the
    real class gathers around a few fixed-but-learnable "natural trace" directions rather than
    wherever the batch happens to be; (2) the loss is asymmetric: fakes never attract each other
    (no fake anchors, no fake positives) and appear only in the denominators of real and
    prototype anchors, i.e. they are pushed away from reals and from the natural traces. Fakes
    of different generators need not share anything but "not real", so the real class is the
    only one given a shape; a fake is then judged by its distance to that cluster.
    """
    zf = F.normalize(z.float(), dim=1)
    c = F.normalize(prototypes.float(), dim=1)
    y = labels.reshape(-1)
    real = y == REAL
    K, M = c.shape[0], zf.shape[0]
    parts: dict[str, float] = {}
    terms = []
    if bool(real.any()):
        zr = zf[real]                                           # (R, d)
        s_rows = (zr @ zf.T) / temperature                      # (R, M) anchor real row vs every row
        idx = torch.nonzero(real).squeeze(1)
        self_mask = torch.zeros_like(s_rows, dtype=torch.bool)
        self_mask[torch.arange(len(idx)), idx] = True
        s_rows = s_rows.masked_fill(self_mask, float("-inf"))
        s_proto = (zr @ c.T) / temperature                      # (R, K)
        s_all = torch.cat([s_rows, s_proto], 1)                 # A(i): all other rows + prototypes
        log_p = s_all - torch.logsumexp(s_all, dim=1, keepdim=True)
        pos = torch.cat([real[None, :].expand(len(idx), M) & ~self_mask,
                         torch.ones(len(idx), K, dtype=torch.bool, device=z.device)], 1)
        l_real = -(log_p.masked_fill(~pos, 0.0)).sum(1) / pos.sum(1)
        terms.append(l_real.mean())
        parts["loss_real_anchored"] = float(terms[-1].detach())
        s_k = (c @ zf.T) / temperature                          # (K, M) prototype vs every row
        log_pk = s_k - torch.logsumexp(s_k, dim=1, keepdim=True)
        l_proto = -(log_pk[:, real]).mean(1)
        terms.append(l_proto.mean())
        parts["loss_prototype_anchored"] = float(terms[-1].detach())
    loss = torch.stack(terms).sum() if terms else zf.sum() * 0.0
    with torch.no_grad():
        nearest = (zf @ c.T).max(1).values
        if bool(real.any()):
            parts["sim_real_to_traces"] = float(nearest[real].mean())
        if bool((~real).any()):
            parts["sim_fake_to_traces"] = float(nearest[~real].mean())
    return loss, parts


def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """k unit centres of the L2-normalised rows of x (cosine k-means, k-means++ style init)."""
    x = F.normalize(x.float(), dim=1)
    k = max(1, min(k, x.shape[0]))
    g = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(x.shape[0], (1,), generator=g))]]
    for _ in range(1, k):
        d = 1 - (x @ torch.stack(centres).T).max(1).values
        p = d.clamp(min=0) ** 2
        p = p / p.sum() if float(p.sum()) > 0 else torch.full_like(p, 1 / len(p))
        centres.append(x[int(torch.multinomial(p, 1, generator=g))])
    c = torch.stack(centres)
    for _ in range(iters):
        assign = (x @ c.T).argmax(1)
        new = torch.stack([x[assign == j].sum(0) if bool((assign == j).any()) else c[j] for j in range(k)])
        c = F.normalize(new, dim=1)
    return c


__all__ = ["code_loss", "natural_traces_loss", "nt_xent", "same_class_derangement", "spherical_kmeans"]
