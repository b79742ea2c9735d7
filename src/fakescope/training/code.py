"""CoDE (Contrastive Deepfake Embeddings, Baraldi et al., ECCV 2024) as a recipe for the engine.

An encoder (a ViT trained from scratch, as CoDE trains ViT-Tiny/16, or an adapter on a frozen
backbone) is trained with CoDE's two InfoNCE terms (`losses.code_loss`, temperature 0.1): the clean
image near an augmented view of another image of its class, and a LOCAL view (5-40% of the image)
near the GLOBAL view (40-100%) of the same image, each far from the other class's views; anchored
on real AND fake images (the released trainer never optimises the fake-anchored term). Negatives come from the global batch
(gathered over processes). Heads on the embedding (k-NN, logistic, one-class SVM) are fitted
afterwards, on clean images, by `trained_embedding.py`.
"""
from __future__ import annotations

import torch

from . import engine
from .losses import code_loss, same_class_derangement


def code_objective(temperature: float = 0.1, positives: str = "pair"):
    """The loss for the engine. A batch with "clean" and "augmented" views gets CoDE's image term too;
    the same-class partner of each image is drawn from a generator seeded by the step, so every
    process (each sees the whole gathered batch) draws the same pairs."""
    def loss_fn(model, batch, ctx: engine.StepContext):
        names = ["global", "local"] + [k for k in ("clean", "augmented") if k in batch]
        n = batch["global"].shape[0]
        z = model(torch.cat([batch[k] for k in names]))   # one forward for every view
        views = {k: ctx.gather(z[i * n:(i + 1) * n]) for i, k in enumerate(names)}
        y = ctx.gather(batch["label"])
        pair_index = None
        if "clean" in views:
            pair_index = same_class_derangement(y, torch.Generator().manual_seed(int(ctx.step)))
        return code_loss(views["local"], views["global"], y, temperature, positives,
                         views.get("clean"), views.get("augmented"), pair_index)
    return loss_fn


def train_code(encoder: torch.nn.Module, dataset, cfg: engine.TrainLoopConfig, temperature: float = 0.1,
               positives: str = "pair", log=None) -> list[dict]:
    """Train `encoder` in place on a dataset of {"global", "local", "label"[, "clean", "augmented"]} items."""
    return engine.run(encoder, code_objective(temperature, positives), dataset, cfg, log=log)


__all__ = ["code_objective", "train_code"]
