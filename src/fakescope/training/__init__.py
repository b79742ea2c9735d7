"""Trained embeddings and the training engine.

    engine.py          one training loop for 1 or N processes (torchrun / DDP), checkpoints, resume, AMP
    views.py           augmentations (PIL/numpy, explicit rng): global/local crops, flip, JPEG, blur, ...
    losses.py          CoDE's two-sided InfoNCE; natural traces: NT-Xent (stage 1), extended SupCon (stage 2)
    data.py            training items for the engine: image views, or cached frozen features of views
    code.py            the CoDE recipe
    natural_traces.py  the "real images as judge" recipe
    fit.py             `fakescope train --method code|natural-traces`: data -> encoder -> head -> Detector

The encoder models are backbones/encoders.py (a `trained:` backbone runs them); the head a
trained-embedding detector saves is heads/trained_embedding.py.
"""
