"""Several backbones read as one: the input of a fused detector (fusion.py, heads/fusion.py).

    imagesize            no network: the image file's (width, height), so a fused detector knows
                         which experts an image is in the domain of (a 32 px thumbnail is not a
                         native-resolution crop). Read from the header: it needs no decode of its own.
    fusion_spec(parts)   (spec.py, with part_specs) a spec whose preprocessing is every part's,
                         flattened and concatenated, and whose features are every part's feature
                         vector side by side, in order.
                         The parts travel inside it (extra["parts"], JSON), so a saved detector
                         records exactly what each expert reads.

`pipeline.prepare` decodes a fusion's image once per distinct decode setting of its parts (a JPEG
draft at the input size for resize-and-crop parts, at `draft_gap` x the input size for a squashing
part that sets it, full resolution otherwise), so each expert sees exactly the pixels it saw in training. `features.extract` reads a fusion part by part, through each part's
own cache rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import load_backbone, register
from .spec import (FUSION, IMAGESIZE, NATIVE_WINDOWS, BackboneSpec, Features, feature_vector, part_dim, part_specs,
                   recorded_widths)


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


def input_sizes(spec: BackboneSpec) -> list[int]:
    """Flattened preprocessed length of each part's input."""
    return [2 if p.kind == IMAGESIZE else reads(p) * 3 * p.input_size ** 2 for p in part_specs(spec)]


def reads(spec: BackboneSpec) -> int:
    """Images a part's preprocessing stacks: 1, or the whole read and its native windows."""
    return 1 + NATIVE_WINDOWS if spec.windows else 1


class FusionBackbone:
    def __init__(self, spec: BackboneSpec):
        self.spec = spec
        self.parts = [load_backbone(p) for p in part_specs(spec)]
        self.batch_size = min(int(getattr(b, "batch_size", 16)) for b in self.parts)
        self.widths = recorded_widths(spec) or [_known_width(p) for p in part_specs(spec)]
        self._sizes = input_sizes(spec)
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]

    def part_input(self, batch: np.ndarray, i: int) -> np.ndarray:
        """Part i's preprocessed images, cut out of the fused batch and shaped as it reads them."""
        p, start = part_specs(self.spec)[i], self._starts[i]
        x = np.asarray(batch[:, start:start + self._sizes[i]], np.float32)
        if p.kind != IMAGESIZE:
            stacked = (reads(p),) if p.windows else ()
            x = x.reshape(len(x), *stacked, 3, p.input_size, p.input_size) if p.layout == "NCHW" else \
                x.reshape(len(x), *stacked, p.input_size, p.input_size, 3)
        return np.ascontiguousarray(x)

    def sizes(self, batch: np.ndarray) -> np.ndarray:
        """(n, 2) each image's file (width, height), read off the batch (no network runs)."""
        i = [p.kind for p in part_specs(self.spec)].index(IMAGESIZE)
        return self.part_input(batch, i).reshape(len(batch), 2)

    def forward_part(self, i: int, batch: np.ndarray) -> np.ndarray:
        """Part i's feature vectors (n, widths[i]) for a fused batch."""
        return self.run_part(i, self.part_input(batch, i))

    def run_part(self, i: int, x: np.ndarray) -> np.ndarray:
        """Part i's feature vectors for its own input (`part_input`'s shape)."""
        return feature_vector(self.parts[i].forward(np.ascontiguousarray(x, np.float32)), part_specs(self.spec)[i])

    def forward(self, batch: np.ndarray, want_patches: bool = False,
                rows: Sequence[np.ndarray | None] | None = None) -> Features:
        """Every part's features side by side. `rows` (one per part, None: every image) runs a part on
        the images a mask selects only; the others get zeros in its columns (a fused detector skips
        experts that do not speak for an image: detector.py)."""
        out = []
        for i, width in enumerate(self.widths):
            mask = None if rows is None or rows[i] is None else np.asarray(rows[i], bool)
            if mask is None or mask.all() or width is None:  # (a width not known without a run: every row)
                out.append(self.forward_part(i, batch))
                continue
            part = np.zeros((len(batch), width), np.float32)
            if mask.any():
                part[mask] = self.forward_part(i, batch[mask])
            out.append(part)
        return Features(pooled=np.concatenate(out, axis=1))


def _known_width(spec: BackboneSpec) -> int | None:
    try:
        return part_dim(spec)
    except ValueError:  # a part reading layers whose fused spec records no widths
        return None


def _no_string(_: str) -> BackboneSpec:
    raise ValueError("a fusion backbone is built by a fused detector (fakescope train --method fusion), "
                     "not named by a spec string")


register(IMAGESIZE, imagesize_spec, ImageSizeBackbone)
register(FUSION, _no_string, FusionBackbone)

__all__ = ["FusionBackbone", "ImageSizeBackbone", "imagesize_spec", "input_sizes"]
