"""Shared pieces of the manipulation generator: array checks, seeded choices, feathered blending."""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageFilter

MASK_KINDS = ("box", "ellipse", "strokes", "blob")
MECHANISM_NAMES = ("resynthesize", "copy_move", "splice", "resample", "blur", "noise")
DEFAULT_AREA = (0.02, 0.35)
MAX_SIDE = 1024


def _as_rgb_array(img) -> np.ndarray:
    """PIL image or HxWx3 uint8 array -> contiguous HxWx3 uint8 array (a copy is not promised)."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {a.dtype} {a.shape}")
    return a


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask is {m.shape}, image is {shape}")
    return (m > 0).astype(np.uint8)


def _uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def pick(rng: np.random.Generator, weights: Mapping[str, float] | Sequence[str]) -> str:
    if not isinstance(weights, Mapping):
        weights = {k: 1.0 for k in weights}
    names = [k for k, v in weights.items() if v > 0]
    if not names:
        raise ValueError("nothing to choose from: every weight is zero")
    p = np.array([weights[k] for k in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary mask -> float32 alpha in [0, 1]: the mask Gaussian-blurred with sigma `radius` pixels
    (PIL GaussianBlur on an 8-bit copy, so alpha is a multiple of 1/255 and exactly 0 a few sigma
    away from the mask: pixels there are never touched). radius <= 0 gives the hard mask."""
    m = (np.asarray(mask) > 0).astype(np.uint8) * 255
    if radius > 0:
        m = np.asarray(Image.fromarray(m, "L").filter(ImageFilter.GaussianBlur(radius)))
    return m.astype(np.float32) / 255.0


def edited_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """The mask of edited pixels for a blend with `feather(mask, radius)`: alpha >= 0.5, as uint8 {0,1}."""
    return (feather(mask, radius) >= 0.5).astype(np.uint8)


def _blend(img: np.ndarray, new: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """img where alpha == 0 (bit-exact), new where alpha == 1, linear in between."""
    a = alpha[..., None]
    out = img.astype(np.float32) * (1.0 - a) + new.astype(np.float32) * a
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.where(a > 0, out, img)


def _support_box(alpha: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of alpha > 0 grown by `margin`, clipped to the image; None when empty."""
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return None
    h, w = alpha.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + 1 + margin),
            max(0, xs.min() - margin), min(w, xs.max() + 1 + margin))


def _seed_from(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:16], 16)


