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

from .registry import (HEAD_FORMAT, Head, HeadDefaults, SklearnShape, head_class, head_from_state, make_head,
                       methods, register)

from . import linear  # noqa: F401  (registers "linear")
from . import robust_mlp  # noqa: F401  (registers "robust-mlp")
from . import multilayer, disentangle  # noqa: F401  (registers "multilayer", "disentangle")
from . import knn, ocsvm, prototype  # noqa: F401  (registers "knn", "ocsvm", "distance")
from . import fusion  # noqa: F401  (registers "fusion": experts + a stacking layer)
from . import trained_embedding  # noqa: F401  (registers "code", "natural-traces": encoder + head)

__all__ = ["HEAD_FORMAT", "Head", "HeadDefaults", "SklearnShape", "head_class", "head_from_state", "make_head", "methods",
           "register"]
