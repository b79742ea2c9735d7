"""Training beyond a head on frozen features, and what every training run shares.

    methods.py            the recipe registry: `--method` names that train more than a head (train.py
                          looks a method up here before fitting a head itself)
    common.py             the sources, the held-out split, the threshold rule and validation metrics,
                          the run's metadata: shared by train.py and every recipe
    trained_embedding.py  recipe `code` / `natural-traces`: data -> trained encoder -> head -> Detector
    lowlevel.py           recipe `lowlevel`: an NPR CNN trained from scratch, then a linear head on it
    fusion.py             recipe `fusion`: several experts, then a stacking layer
    engine.py             one training loop for 1 or N processes (torchrun / DDP), checkpoints, resume, AMP
    views.py              augmentations (PIL/numpy, explicit rng): global/local crops, flip, JPEG, blur, ...
    losses.py             CoDE's two-sided InfoNCE; natural traces: NT-Xent (stage 1), extended SupCon (stage 2)
    data.py               training items for the engine: image views, or cached frozen features of views
    code.py               the CoDE recipe's training stage
    natural_traces.py     the "real images as judge" recipe's training stages
    leakage.py            the text-leak guard train.py runs on captions
    options.py            `--set KEY=VALUE` parsing; a recipe's options as a typed dataclass

The encoder models are backbones/encoders.py (a `trained:` backbone runs them); the head a
trained-embedding detector saves is heads/trained_embedding.py.
"""
