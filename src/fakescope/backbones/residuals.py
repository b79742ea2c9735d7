"""`fsd`: a pixel-level self-description of an image, with no weights (issue 17, "real photos as the judge").

A camera's pipeline (demosaicing, denoising, JPEG) leaves each pixel predictable from its
neighbours in a particular way; a generator's decoder (up-sampling convolutions) in another. After
Forensic Self-Descriptions (Nguyen et al., CVPR 2025), each image is described by the linear
predictor that best explains its own pixels, fitted on that image alone:

    at scales 1 and 2 (2x2 box average) of the luma of the centre crop, read at native resolution:
      the 8 weights of the least-squares (ridge) predictor of a pixel from its 3x3 neighbours,
      log of the predictor's residual variance,
      log of its residual variance over a plain neighbour average's (how much structure it found),
      log of the residual kurtosis (heavy tails: edges, blocks);
    at scale 1: how unevenly the residual energy falls on the phases of a 2-, 4- and 8-pixel grid
      (the coefficient of variation of the per-phase means: periodic traces of up-sampling or JPEG).

25 numbers per image. A head fitted on real images only (`--method distance`, `ocsvm`) turns it
into a model of what real photos look like; `--method linear` fits it on both classes.
`fsd?size=N` reads the centre N px (default 256; smaller images are upscaled first, which the
description then sees).
"""
from __future__ import annotations

import numpy as np

from . import register
from .spec import BackboneSpec, Features

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
PERIODS = (2, 4, 8)
RIDGE = 1e-3      # relative to the neighbours' mean energy: keeps flat images solvable
DIM = 2 * (len(OFFSETS) + 3) + len(PERIODS)


VERSION = "fsd-1"  # stands for weights: bump it when `describe` changes, so cached features never mix


def fsd_spec(_: str = "") -> BackboneSpec:
    return BackboneSpec(name="fsd", kind="fsd", weights=VERSION, input_size=256, resize="native_crop",
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dim=DIM)


def _predictor(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, residual map, plain-average residual map) of the 3x3 predictor fitted on `y` (H, W),
    its mean removed first (else the weights would spend themselves reproducing the brightness)."""
    y = y - y.mean()
    h, w = y.shape
    centre = y[1:-1, 1:-1].reshape(-1)
    A = np.stack([y[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx].reshape(-1) for dy, dx in OFFSETS], 1)
    gram = A.T @ A
    # ridge relative to the image's energy, with a floor: a flat image (no energy) gets weights 0
    gram += np.eye(len(OFFSETS)) * (RIDGE * float(np.trace(gram)) / len(OFFSETS) + 1e-6)
    weights = np.linalg.solve(gram, A.T @ centre)
    shape = (h - 2, w - 2)
    return weights, (centre - A @ weights).reshape(shape), (centre - A.mean(1)).reshape(shape)


def _residual_stats(r: np.ndarray, plain: np.ndarray) -> list[float]:
    var = float(np.mean(r ** 2)) + 1e-8
    return [np.log(var), np.log(var / (float(np.mean(plain ** 2)) + 1e-8)),
            np.log(float(np.mean(r ** 4)) / var ** 2 + 1e-8)]


def _phase_spread(energy: np.ndarray, p: int) -> float:
    h, w = (energy.shape[0] // p) * p, (energy.shape[1] // p) * p
    phases = energy[:h, :w].reshape(h // p, p, w // p, p).mean(axis=(0, 2))
    return float(phases.std() / (phases.mean() + 1e-8))


def describe(image: np.ndarray) -> np.ndarray:
    """The description of one preprocessed image (3, H, W), pixels in 0..1."""
    y = np.tensordot(LUMA, np.asarray(image, np.float64), axes=1) * 255.0
    out: list[float] = []
    for scale in (1, 2):
        ys = y if scale == 1 else y[:y.shape[0] // 2 * 2, :y.shape[1] // 2 * 2].reshape(
            y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
        weights, r, plain = _predictor(ys)
        out += list(weights) + _residual_stats(r, plain)
        if scale == 1:
            out += [_phase_spread(r ** 2, p) for p in PERIODS]
    return np.asarray(out, np.float32)


class SelfDescriptionBackbone:
    batch_size = 32

    def __init__(self, spec: BackboneSpec):
        if spec.layers or spec.patch_layer is not None:
            raise ValueError("fsd: no layers to read (a fitted predictor, not a network)")
        if spec.input_size < 16:
            raise ValueError("fsd: the crop must be at least 16 px")
        if spec.weights != VERSION:
            raise ValueError(f"fsd: this model was made with description {spec.weights!r}; this fakescope "
                             f"computes {VERSION!r}")
        self.spec = spec

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        return Features(pooled=np.stack([describe(x) for x in np.asarray(batch, np.float32)]))


register("fsd", fsd_spec, SelfDescriptionBackbone)

__all__ = ["DIM", "SelfDescriptionBackbone", "describe", "fsd_spec"]
