"""Backbones for trained embeddings (`fakescope train --method code|natural-traces`).

    pixels                    no network at all: the preprocessed image itself, flattened. The input
                              of an encoder trained from scratch (its weights travel with the
                              detector's head). `pixels?size=32&resize=resize` (the default) squashes
                              to 32x32; `?size=128&resize=native_crop` takes the centre 128 px at
                              native resolution. Pixels are scaled to [-1, 1].
    trained:<encoder dir>     a trained encoder folder (encoder.json + encoder.safetensors, written
                              by `fakescope train --method code|natural-traces` into MODEL_DIR/encoder)
                              as a frozen backbone: its forward is the learned unit-norm embedding,
                              so any head (`--method linear`, `knn`, ...) can be fitted on it. It reads
                              images the way its input did (pixels, or the frozen registry backbone
                              an adapter sits on, recorded in encoder.json).
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import load_backbone, register
from .spec import BackboneSpec, Features

PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)


def pixels_spec(_: str = "") -> BackboneSpec:
    return BackboneSpec(name="pixels", kind="pixels", weights="none", input_size=32, resize="resize",
                        mean=PIXEL_MEAN, std=PIXEL_STD, dim=0)


class PixelsBackbone:
    batch_size = 64

    def __init__(self, spec: BackboneSpec):
        if spec.layers or spec.patch_layer is not None:
            raise ValueError("pixels: no layers to read (it is the image itself)")
        self.spec = spec

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        batch = np.asarray(batch, np.float32)
        patches = batch.transpose(0, 2, 3, 1) if want_patches else None
        return Features(pooled=np.ascontiguousarray(batch.reshape(len(batch), -1)), patches=patches)


def encoder_dir(ref: str) -> Path:
    d = Path(ref).expanduser()
    if not (d / "encoder.json").exists():
        raise FileNotFoundError(f"trained:{ref}: no encoder.json in {d} (expected MODEL_DIR/encoder written by "
                                "`fakescope train --method code|natural-traces`)")
    return d.resolve()


def trained_spec(ref: str) -> BackboneSpec:
    d = encoder_dir(ref)
    from ..saving import read_json
    from .spec import model_backbone_spec
    meta = read_json(d / "encoder.json", "encoder.json")
    inp = model_backbone_spec(meta.get("input"), d)  # the encoder folder is data too: nothing outside it
    digest = hashlib.sha256((d / "encoder.safetensors").read_bytes()).hexdigest()[:16]
    # weights = folder + content hash: a retrained encoder in the same folder never reuses cached features
    return replace(inp, name=f"trained:{ref}", kind="trained:", weights=f"{d}#{digest}", dim=int(meta.get("dim", 0)),
                   layers=(), pooled=True, patch_layer=None, extra=())


class TrainedBackbone:
    def __init__(self, spec: BackboneSpec):
        from .encoders import load_encoder
        if spec.layers or spec.patch_layer is not None:
            raise ValueError(f"{spec.name}: a trained encoder has one output (no layers or patch grid)")
        self.spec = spec
        from .spec import model_backbone_spec
        where = spec.weights.split("#")[0]
        self.encoder, self.meta = load_encoder(where)
        inp = model_backbone_spec(self.meta.get("input"), where)
        # the input backbone sees images preprocessed as this spec says (same fields, possibly ?size= changed)
        self.input_spec = replace(inp, input_size=spec.input_size, resize=spec.resize)
        self.input = load_backbone(self.input_spec)
        self.batch_size = getattr(self.input, "batch_size", 16)

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        from .spec import feature_vector
        from .encoders import embed
        x = feature_vector(self.input.forward(batch), self.input_spec)
        shape = (3, self.spec.input_size, self.spec.input_size) if self.input_spec.kind == "pixels" else None
        return Features(pooled=embed(self.encoder, x, shape))


register("pixels", pixels_spec, PixelsBackbone)
register("trained:", trained_spec, TrainedBackbone)
