"""Heads: small models over frozen features, registered by method name.

A head is `fit(X, y, groups) -> info`, `predict(X) -> P(fake)`, and its state as
named arrays + a JSON config, which is all a Detector saves (safetensors + JSON).

Every registered head also speaks scikit-learn's classifier shape (`SklearnShape`, added by
`register`): `predict_proba(X)` (n x 2: P(real), P(fake)), `decision_function(X)` (the logit of
P(fake): > 0 means fake), `classes_` = [0, 1], and `save(dir)` / `load(dir)` of the head alone as
`head.json` + `head.safetensors`. Unlike scikit-learn, `fit` returns its info dict (training uses
it), `predict` returns P(fake), not labels, and the one-class SVM heads keep the one-class
`decision_function` of sklearn's OneClassSVM (> 0: inside the real class).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Head(Protocol):
    """What a Detector needs from a head.

    Some heads accept extra per-row inputs in fit, e.g. `fit(X, y, groups, text=...)`
    (caption embeddings aligned with the rows of X, see heads/disentangle.py); predict
    always takes image features only.
    """
    method: str

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict: ...
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def config(self) -> dict: ...
    def state(self) -> dict[str, np.ndarray]: ...


_HEADS: dict[str, type] = {}
HEADS_READING_TEXT = {"disentangle"}  # fit(X, y, groups, text=caption embeddings)
HEAD_FORMAT = "fakescope.head/1"


class SklearnShape:
    """scikit-learn's classifier methods over a head's `predict` (P(fake)); see the module doc."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.asarray(self.predict(X), dtype=np.float64).reshape(-1)
        return np.column_stack([1.0 - p, p])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        # clipped so a saturated P(fake) of exactly 0 or 1 stays a finite, still-ordered margin
        p = np.clip(np.asarray(self.predict(X), dtype=np.float64).reshape(-1), 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)

    def save(self, directory):
        """The head alone as a model folder: head.json (method + config) + head.safetensors."""
        from ..saving import save_model_dir
        meta = {"format": HEAD_FORMAT, "method": self.method, "config": self.config()}
        return save_model_dir(directory, meta, "head.json", dict(self.state()), "head.safetensors")

    @classmethod
    def load(cls, directory) -> "Head":
        """A head saved by `save`, checked as data like any model folder (any registered method)."""
        from ..errors import ModelFolderError
        from ..saving import load_model_dir
        meta, arrays = load_model_dir(directory, "head.json", "head.safetensors", HEAD_FORMAT, "Head.save")
        try:
            return head_from_state(str(meta["method"]), meta["config"], arrays)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelFolderError(f"{directory}: broken head ({type(e).__name__}: {str(e)[:120]})") from None


def register(cls: type) -> type:
    # the scikit-learn shape without touching each head's class: a head's own method wins
    for name, attr in vars(SklearnShape).items():
        if not name.startswith("__") and not hasattr(cls, name):
            setattr(cls, name, attr)
    _HEADS[cls.method] = cls
    return cls


def methods() -> list[str]:
    return sorted(_HEADS)


def make_head(method: str, **config) -> Head:
    if method not in _HEADS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(methods())}")
    return _HEADS[method](**config)


def head_from_state(method: str, config: dict, state: dict[str, np.ndarray]) -> Head:
    if method not in _HEADS:
        raise ValueError(f"saved head uses method {method!r}, which this fakescope does not know ({', '.join(methods())})")
    return _HEADS[method].from_state(config, state)


from . import linear  # noqa: E402,F401  (registers "linear")
from . import robust_mlp  # noqa: E402,F401  (registers "robust-mlp")
from . import multilayer, disentangle  # noqa: E402,F401  (registers "multilayer", "disentangle")
from . import knn, ocsvm, prototype  # noqa: E402,F401  (registers "knn", "ocsvm", "distance")
from . import fusion  # noqa: E402,F401  (registers "fusion": experts + a stacking layer)
from . import trained_embedding  # noqa: E402,F401  (registers "code", "natural-traces": encoder + head)
