"""Trained embeddings and the training engine.

    engine.py          one training loop for 1 or N processes (torchrun / DDP), checkpoints, resume, AMP
    views.py           augmentations (PIL/numpy, explicit rng): global/local crops, flip, JPEG, blur, ...
    encoders.py        a small ViT from scratch; a trainable adapter over a frozen registry backbone
    losses.py          CoDE's two-sided InfoNCE; natural traces: NT-Xent (stage 1), extended SupCon (stage 2)
    data.py            training items for the engine: image views, or cached frozen features of views
    code.py            the CoDE recipe
    natural_traces.py  the "real images as judge" recipe
    head.py            the saved head: encoder + logistic / knn / ocsvm / distance on its embedding
    fit.py             `fakescope train --method code|natural-traces`: data -> encoder -> head -> Detector

Imports here stay light: the heads registry imports `head` at start-up.
"""
