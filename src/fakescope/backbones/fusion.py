"""Several backbones read as one: the input of a fused detector (fusion.py, heads/fusion.py).

    imagesize            no network: the image file's (width, height), so a fused detector knows
                         which experts an image is in the domain of (a 32 px thumbnail is not a
                         native-resolution crop). Read from the header: it needs no decode of its own.
    fusion_spec(parts)   a spec whose preprocessing is every part's, flattened and concatenated, and
                         whose features are every part's feature vector side by side, in order.
                         The parts travel inside it (extra["parts"], JSON), so a saved detector
                         records exactly what each expert reads.

`pipeline.prepare` decodes a fusion's image once per distinct decode setting of its parts (JPEG
draft for resize-and-crop parts, full resolution for native ones), so each expert sees exactly the
pixels it saw in training. `features.extract` reads a fusion part by part, through each part's
own cache rows.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from typing import Sequence

import numpy as np

from . import load_backbone, register
from .spec import BackboneSpec, Features

FUSION = "fusion"
IMAGESIZE = "imagesize"


def imagesize_spec(_: str = "") -> BackboneSpec:
    # resize "resize": no pixels are read; pipeline.prepare hands it whichever decode the other parts made
    return BackboneSpec(name=IMAGESIZE, kind=IMAGESIZE, weights="none", input_size=1, resize="resize",
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dim=2)


class ImageSizeBackbone:
    batch_size = 256

    def __init__(self, spec: BackboneSpec):
        self.spec = spec

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        return Features(pooled=np.asarray(batch, np.float32).reshape(len(batch), 2))


def fusion_spec(parts: Sequence[BackboneSpec]) -> BackboneSpec:
    parts = list(parts)
    return BackboneSpec(name=FUSION + ":" + "+".join(p.name for p in parts), kind=FUSION, weights="parts",
                        input_size=max(p.input_size for p in parts), resize="native_crop",
                        dim=sum(part_dim(p) for p in parts),
                        extra=(("parts", json.dumps([asdict(p) for p in parts], sort_keys=True)),))


@lru_cache(maxsize=64)
def _parts(text: str) -> tuple[BackboneSpec, ...]:
    return tuple(BackboneSpec.from_dict(p) for p in json.loads(text))


def part_specs(spec: BackboneSpec) -> tuple[BackboneSpec, ...]:
    if spec.kind != FUSION:
        return (spec,)
    return _parts(dict(spec.extra)["parts"])


def part_dim(spec: BackboneSpec) -> int:
    """Width of a part's feature vector (pooled embedding and requested layers)."""
    if spec.layers:
        raise ValueError(f"{spec.name}: a fusion part reads one pooled embedding, not layers")
    return int(spec.dim)


def input_sizes(spec: BackboneSpec) -> list[int]:
    """Flattened preprocessed length of each part's input."""
    return [2 if p.kind == IMAGESIZE else 3 * p.input_size ** 2 for p in part_specs(spec)]


class FusionBackbone:
    def __init__(self, spec: BackboneSpec):
        self.spec = spec
        self.parts = [load_backbone(p) for p in part_specs(spec)]
        self.batch_size = min(int(getattr(b, "batch_size", 16)) for b in self.parts)

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        from .spec import feature_vector
        out, start = [], 0
        for b, p, n in zip(self.parts, part_specs(self.spec), input_sizes(self.spec)):
            x = np.asarray(batch[:, start:start + n], np.float32)
            start += n
            if p.kind != IMAGESIZE:
                x = x.reshape(len(x), 3, p.input_size, p.input_size) if p.layout == "NCHW" else \
                    x.reshape(len(x), p.input_size, p.input_size, 3)
            out.append(feature_vector(b.forward(np.ascontiguousarray(x)), p))
        return Features(pooled=np.concatenate(out, axis=1))


def _no_string(_: str) -> BackboneSpec:
    raise ValueError("a fusion backbone is built by a fused detector (fakescope train --method fusion), "
                     "not named by a spec string")


register(IMAGESIZE, imagesize_spec, ImageSizeBackbone)
register(FUSION, _no_string, FusionBackbone)

__all__ = ["FUSION", "IMAGESIZE", "FusionBackbone", "fusion_spec", "imagesize_spec", "input_sizes", "part_specs"]
