""""Real images as judge" (natural traces) as a two-stage recipe for the engine.

The paper gives no public code; this is the formulation fakescope implements (the maths is in
`losses.natural_traces_loss` and in the results notes):

Stage 1, reals only: learn the "natural traces" of real photos with a self-supervised objective,
  NT-Xent (SimCLR) between a global and a local view of each real image: the embedding must
  recognise a real photo from a small piece of it, through JPEG, blur, colour and resizing, i.e.
  keep what survives those, and tell real photos apart from each other.
Between the stages: K prototypes = spherical k-means of the stage-1 embeddings of the reals
  (the natural-trace directions), made learnable.
Stage 2, reals and fakes: extended supervised contrastive loss: reals are pulled towards the
  prototypes and towards each other; fakes appear only as negatives (pushed away from reals and
  prototypes, never pulled together, since fakes of unseen generators need share nothing but
  "not real"). The paper uses the traces as an ADDITIONAL target beside the detector's real/fake
  objective: a linear real/fake classifier on the unit embedding trained with BCE, added with
  weight `supervised_weight` (1 by default; 0 is fakescope's earlier, purely contrastive stage 2).
  A fake is then judged by its distance to the nearest LEARNED trace (the `distance` head given
  the trained prototypes; `score_by=centroid` refits a real centre instead, as fakescope did).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


from . import engine
from .losses import natural_traces_loss, nt_xent, spherical_kmeans


class WithTraces(nn.Module):
    """The encoder plus K learnable natural-trace prototypes and, with `classifier`, a linear
    real/fake logit on the unit embedding (all returned by forward, so DDP syncs them)."""

    def __init__(self, encoder: nn.Module, prototypes: torch.Tensor, classifier: bool = False):
        super().__init__()
        self.encoder = encoder
        self.prototypes = nn.Parameter(prototypes.clone())
        self.classifier = nn.Linear(prototypes.shape[1], 1) if classifier else None

    def forward(self, x):
        z = self.encoder(x)
        logits = self.classifier(F.normalize(z, dim=1)).squeeze(1) if self.classifier is not None else None
        return z, self.prototypes, logits


def stage1_objective(temperature: float = 0.2):
    def loss_fn(model, batch, ctx: engine.StepContext):
        n = batch["global"].shape[0]
        z = model(torch.cat([batch["global"], batch["local"]]))
        loss = nt_xent(ctx.gather(z[:n]), ctx.gather(z[n:]), temperature)
        return loss, {}
    return loss_fn


def stage2_objective(temperature: float = 0.1, supervised_weight: float = 1.0):
    """natural_traces_loss + supervised_weight * BCE(real/fake logits of both views), when the model has a classifier."""
    def loss_fn(model, batch, ctx: engine.StepContext):
        n = batch["global"].shape[0]
        z, protos, logits = model(torch.cat([batch["global"], batch["local"]]))
        g, l, y = ctx.gather(z[:n]), ctx.gather(z[n:]), ctx.gather(batch["label"])
        loss, parts = natural_traces_loss(torch.cat([g, l]), torch.cat([y, y]), protos, temperature)
        if logits is not None and supervised_weight > 0:
            lg = torch.cat([ctx.gather(logits[:n]), ctx.gather(logits[n:])])
            bce = F.binary_cross_entropy_with_logits(lg.float(), torch.cat([y, y]).float())
            parts["loss_contrastive"], parts["loss_supervised"] = float(loss.detach()), float(bce.detach())
            loss = loss + supervised_weight * bce
        return loss, parts
    return loss_fn


class _Subset:
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def item(self, index, rng):
        return self.dataset.item(int(self.indices[index]), rng)


@torch.no_grad()
def initial_prototypes(encoder: nn.Module, dataset, real_idx: np.ndarray, k: int, seed: int = 0,
                       max_items: int = 2048) -> torch.Tensor:
    """Spherical k-means of the encoder's embeddings of (a seeded sample of) the reals' global views."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(real_idx, min(len(real_idx), max_items), replace=False)
    encoder.eval()
    device = next(encoder.parameters()).device
    z = []
    for i in range(0, len(idx), 256):
        batch = engine.collate([dataset.item(int(j), engine.item_rng(seed, 2**31 - 2, int(j))) for j in idx[i:i + 256]])
        z.append(encoder(batch["global"].float().to(device)).cpu())
    encoder.train()
    return spherical_kmeans(torch.cat(z), k, seed=seed)


def train_natural_traces(encoder: nn.Module, dataset, stage1: engine.TrainLoopConfig, stage2: engine.TrainLoopConfig,
                         prototypes: int = 4, stage1_temperature: float = 0.2, temperature: float = 0.1,
                         supervised_weight: float = 1.0, log=None) -> dict:
    """Both stages in place on `encoder`; returns {"stage1": history, "stage2": history, "prototypes": (K, d)}."""
    labels = np.asarray(dataset.labels)
    real_idx = np.flatnonzero(labels == 0)
    h1 = engine.run(encoder, stage1_objective(stage1_temperature), _Subset(dataset, real_idx), stage1, log=log) \
        if stage1.epochs > 0 else []
    init = initial_prototypes(encoder, dataset, real_idx, prototypes, seed=stage2.seed)
    model = WithTraces(encoder, init, classifier=supervised_weight > 0)
    h2 = engine.run(model, stage2_objective(temperature, supervised_weight), dataset, stage2, log=log)
    return {"stage1": h1, "stage2": h2, "prototypes": model.prototypes.detach().clone()}


__all__ = ["WithTraces", "initial_prototypes", "stage1_objective", "stage2_objective", "train_natural_traces"]
