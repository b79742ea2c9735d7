"""CoDE (Contrastive Deepfake Embeddings, Baraldi et al., ECCV 2024) as a recipe for the engine.

An encoder (a ViT trained from scratch, as CoDE trains ViT-Tiny/16, or an adapter on a frozen
backbone) is trained so that a LOCAL view (5-40% of the image) of an image lies near the GLOBAL
views (40-100%) of its class and far from those of the other class: `losses.code_loss`, InfoNCE
at temperature 0.1, anchored on real AND fake local views. Negatives come from the global batch
(gathered over processes). Heads on the embedding (k-NN, logistic, one-class SVM) are fitted
afterwards, on clean images, by `fit.py`.
"""
from __future__ import annotations

import torch

from . import engine
from .losses import code_loss


def code_objective(temperature: float = 0.1, positives: str = "class"):
    def loss_fn(model, batch, ctx: engine.StepContext):
        n = batch["global"].shape[0]
        z = model(torch.cat([batch["global"], batch["local"]]))   # one forward for both views
        g, l, y = ctx.gather(z[:n]), ctx.gather(z[n:]), ctx.gather(batch["label"])
        return code_loss(l, g, y, temperature, positives)
    return loss_fn


def train_code(encoder: torch.nn.Module, dataset, cfg: engine.TrainLoopConfig, temperature: float = 0.1,
               positives: str = "class", log=None) -> list[dict]:
    """Train `encoder` in place on a dataset of {"global", "local", "label"} items."""
    return engine.run(encoder, code_objective(temperature, positives), dataset, cfg, log=log)


__all__ = ["code_objective", "train_code"]
