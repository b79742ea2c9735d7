"""Heads: small models over frozen features, registered by method name.

A head is `fit(X, y, groups) -> info`, `predict(X) -> P(fake)`, and its state as
named arrays + a JSON config, which is all a Detector saves (safetensors + JSON).
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


def register(cls: type) -> type:
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
from ..training import head as _trained_head  # noqa: E402,F401  (registers "code", "natural-traces")
