"""The heads' registry: the `Head` protocol (what a head declares and answers), the defaults and the
scikit-learn shape `register` gives every head, and the lookups by method name. heads/__init__.py
imports every head module, so any import of fakescope.heads finds them all registered."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Head(Protocol):
    """What a Detector and training need from a head.

    Besides the methods below, a head declares what it can do (`register` gives a head the
    defaults of `HeadDefaults` for what it does not declare itself):
      reads_text      fit also takes caption embeddings aligned with X: `fit(X, y, groups, text=T)`
                      (heads/disentangle.py); predict always takes image features only
      needs_blocks    its config takes `blocks`: the widths of a multi-layer feature vector's blocks,
                      read off the backbone by training (heads/multilayer.py)
      trains_encoder  it holds an encoder its recipe trained (training/trained_embedding.py); `save_encoder(dir,
                      input_spec, extra)` writes it as a `trained:` backbone
    and answers `analysis`, `uncertainty_input`, `predict_with_experts`, `disagreements` and `vetoes` (defaults below).
    """
    method: str
    reads_text: bool
    needs_blocks: bool
    trains_encoder: bool

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict: ...
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def config(self) -> dict: ...
    def state(self) -> dict[str, np.ndarray]: ...
    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "Head": ...
    def analysis(self, X: np.ndarray, y: np.ndarray) -> dict | None: ...
    def uncertainty_input(self, X: np.ndarray) -> np.ndarray: ...
    def predict_with_experts(self, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]: ...
    def disagreements(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray: ...
    def vetoes(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray: ...


class HeadDefaults:
    """What a registered head has unless it defines it itself (see `Head`)."""

    reads_text = False
    needs_blocks = False
    trains_encoder = False

    def analysis(self, X: np.ndarray, y: np.ndarray) -> dict | None:
        """How the head's signal splits (disentangle: semantic vs low-level probes); None: no analysis."""
        return None

    def uncertainty_input(self, X: np.ndarray) -> np.ndarray:
        """The features the "uncertain" rule measures familiarity on (a fusion: its first expert's)."""
        return X

    def predict_with_experts(self, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """P(fake) and, for a head of several experts, each expert's P(fake) from the same pass."""
        return self.predict(X), None

    def disagreements(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
        """(n,) True where a second opinion inside the head objects to the verdict (a fusion's referee)."""
        return np.zeros(len(X), bool)

    def vetoes(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
        """(n,) True where a second opinion inside the head is sure enough to overrule a "fake" verdict."""
        return np.zeros(len(X), bool)


_HEADS: dict[str, type] = {}
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
    # the defaults and the scikit-learn shape without touching each head's class: a head's own wins
    for name, attr in [*vars(HeadDefaults).items(), *vars(SklearnShape).items()]:
        if not name.startswith("__") and not hasattr(cls, name):
            setattr(cls, name, attr)
    _HEADS[cls.method] = cls
    return cls


def methods() -> list[str]:
    return sorted(_HEADS)


def head_class(method: str) -> type:
    """The registered head class of `method`: what it can do is on the class (see `Head`)."""
    if method not in _HEADS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(methods())}")
    return _HEADS[method]


def make_head(method: str, **config) -> Head:
    return head_class(method)(**config)


def head_from_state(method: str, config: dict, state: dict[str, np.ndarray]) -> Head:
    if method not in _HEADS:
        raise ValueError(f"saved head uses method {method!r}, which this fakescope does not know ({', '.join(methods())})")
    return _HEADS[method].from_state(config, state)
