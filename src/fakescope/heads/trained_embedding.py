"""The head a trained-embedding detector saves: the trained encoder + a head on its embedding.

A Detector is a backbone spec + a head. For `code` and `natural-traces` the backbone is what the
encoder reads (`pixels` for a ViT trained from scratch, or the frozen registry backbone an adapter
sits on), and this head holds the encoder's weights and the head fitted on its unit-norm
embedding (`logistic`, `knn`, `ocsvm` or `distance`). Everything is in the detector's own two
files (head.safetensors: `encoder.*` and `head.*` arrays; detector.json: both configs), so a
model folder can be moved or copied and still loads. The encoder is also written on its own to
MODEL_DIR/encoder (`trained:<dir>` backbone) for fitting other heads on it.
"""
from __future__ import annotations

import numpy as np

from ..backbones.encoders import embed, encoder_from_state, encoder_state, save_encoder
from .registry import head_from_state, make_head, register

HEAD_NAMES = {"logistic": "linear", "linear": "linear", "knn": "knn", "ocsvm": "ocsvm", "ocsvm-poly": "ocsvm-poly",
              "distance": "distance"}


def make_inner_head(name: str, seed: int = 0, **options):
    if name not in HEAD_NAMES:
        raise ValueError(f"head {name!r} unknown; choose from {', '.join(sorted(HEAD_NAMES))}")
    return make_head(HEAD_NAMES[name], seed=seed, **options)


class TrainedEmbeddingHead:
    method = "code"
    trains_encoder = True  # its recipe (training/trained_embedding.py) trains the encoder; save_encoder writes it alone

    def __init__(self, encoder=None, input_shape: tuple[int, ...] | None = None, head=None, seed: int = 0, **_):
        self.encoder, self.input_shape, self.head, self.seed = encoder, input_shape, head, seed

    def embed(self, X: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            raise ValueError(f"method {self.method!r} trains its own encoder: use `fakescope train --method "
                             f"{self.method}` (or fakescope.training.trained_embedding), not a head on frozen features")
        return embed(self.encoder, X, self.input_shape)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        """Fit the inner head on the embeddings of X (the encoder stays as trained)."""
        Z = self.embed(X)
        return self.head.fit(Z, y, groups)

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self.embed(X)
        return self.head.predict(Z)

    def config(self) -> dict:
        return {"encoder_kind": self.encoder.kind, "encoder": self.encoder.config(), "dim": int(self.encoder.out_dim),
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "head_method": self.head.method, "head": self.head.config()}

    def state(self) -> dict[str, np.ndarray]:
        out = {f"encoder.{k}": v for k, v in encoder_state(self.encoder).items()}
        out.update({f"head.{k}": v for k, v in self.head.state().items()})
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]):
        enc = encoder_from_state(config["encoder_kind"], config["encoder"],
                                 {k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        head = head_from_state(config["head_method"], config["head"],
                               {k[5:]: v for k, v in state.items() if k.startswith("head.")})
        shape = tuple(config["input_shape"]) if config.get("input_shape") else None
        return cls(encoder=enc, input_shape=shape, head=head)

    def save_encoder(self, directory, input_spec: dict, extra: dict | None = None):
        return save_encoder(directory, self.encoder, input_spec, extra)


@register
class CoDEHead(TrainedEmbeddingHead):
    method = "code"


@register
class NaturalTracesHead(TrainedEmbeddingHead):
    method = "natural-traces"


__all__ = ["CoDEHead", "HEAD_NAMES", "NaturalTracesHead", "TrainedEmbeddingHead", "make_inner_head"]
