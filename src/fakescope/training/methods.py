"""Training recipes: the `--method` names whose detector is more than a head on frozen features.

Every head in heads/ (linear, knn, disentangle, ...) is a method: `fit.fit_detector` extracts
the backbone's features and fits it, asking the head's class what it needs (`reads_text`,
`needs_blocks`). A method that trains more than that registers its recipe here, in the module
that defines it:

    code, natural-traces   training/trained_embedding.py   a contrastively trained encoder + a head on it
    lowlevel               training/lowlevel.py            an NPR CNN trained from scratch + a linear head on it
    fusion                 training/fusion.py              several experts + a stacking layer

fit.py imports those modules (so they are registered) and `fit_detector` looks a method up here
first. A recipe is called `fit(cfg, samples, log, fit_detector)`: it is handed `fit_detector` to fit
its parts (the linear head on its encoder, each expert) the way every method is fitted, so no recipe
imports fit.py. A recipe reads its options from `cfg.head_options` (`--set`) and checks them
(ValueError: the CLI shows it as a usage error), `run_dir` among them: where its checkpoints and
trained encoders go (`fakescope train` gives MODEL_DIR/training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Recipe:
    method: str
    fit: Callable  # (cfg, samples or None, log, fit_detector) -> Detector (None on torchrun ranks other than 0)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(*methods: str) -> Callable[[Callable], Callable]:
    """Decorator: `fit` is the recipe of each of `methods`."""
    def register(fit: Callable) -> Callable:
        for method in methods:
            _RECIPES[method] = Recipe(method, fit)
        return fit
    return register


def recipe(method: str) -> Recipe | None:
    """The method's recipe, or None: a head fitted on frozen features."""
    return _RECIPES.get(method)


def recipe_methods() -> list[str]:
    return sorted(_RECIPES)


__all__ = ["Recipe", "recipe", "recipe_methods", "register_recipe"]
