"""Training: fit a detector for any method (`from fakescope.training import TrainConfig, fit_detector`).

    fit.py                `TrainConfig`, `fit_detector`: the one entry for every method; a head on
                          frozen features is fitted there, any other method by its recipe
    methods.py            the recipe registry: `--method` names that train more than a head (fit.py
                          looks a method up here before fitting a head itself)
    common.py             the sources, the held-out split, the threshold rule and validation metrics,
                          the run's metadata: shared by fit.py and every recipe
    trained_embedding.py  recipe `code` / `natural-traces`: data -> trained encoder -> head -> Detector
    lowlevel.py           recipe `lowlevel`: an NPR CNN trained from scratch, then a linear head on it
    fusion.py             recipe `fusion`: several experts, then a stacking layer
    engine.py             one training loop for 1 or N processes (torchrun / DDP), checkpoints, resume, AMP
    views.py              augmentations (PIL/numpy, explicit rng): global/local crops, flip, JPEG, blur, ...
    losses.py             CoDE's two-sided InfoNCE; natural traces: NT-Xent (stage 1), extended SupCon (stage 2)
    data.py               training items for the engine: image views, or cached frozen features of views
    code.py               the CoDE recipe's training stage
    natural_traces.py     the "real images as judge" recipe's training stages
    leakage.py            the text-leak guard fit.py runs on captions
    options.py            `--set KEY=VALUE` parsing; a recipe's options as a typed dataclass

The encoder models are backbones/encoders.py (a `trained:` backbone runs them); the head a
trained-embedding detector saves is heads/trained_embedding.py.
"""
from ..lazy import lazy_exports

# Lazy: fit.py imports the recipes (and torch); `fakescope.training.options` stays light for the CLI.
_EXPORTS = {"TrainConfig": "fit", "fit_detector": "fit", "load_sources": "common"}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
