"""Pictures of a localisation map: the map as a grey PNG, or as a heatmap over the image.

Both take a float map in [0, 1] (values outside are clipped, NaN counts as 0) at the
image's size, as `Localizer.predict_maps` returns it. The colour ramp is our own small
table (black-blue -> cyan -> yellow -> red), interpolated linearly; no matplotlib.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# (position in 0..1, R, G, B): dark blue for "untouched", through cyan and yellow, to red.
_RAMP = np.array([
    (0.00, 0, 0, 96),
    (0.25, 0, 96, 255),
    (0.50, 0, 230, 230),
    (0.75, 255, 230, 0),
    (1.00, 230, 0, 0),
], dtype=np.float32)


def _as_unit(prob_map: np.ndarray) -> np.ndarray:
    m = np.asarray(prob_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {m.shape}")
    return np.clip(np.nan_to_num(m, nan=0.0), 0.0, 1.0)


def colormap(prob_map: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 RGB from the heatmap ramp."""
    m = _as_unit(prob_map)
    rgb = np.stack([np.interp(m, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _save(img: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def save_mask_png(prob_map: np.ndarray, path: str | os.PathLike) -> Path:
    """8-bit grey PNG (mode L) of the map's size: pixel value = round(255 * probability)."""
    m = _as_unit(prob_map)
    return _save(Image.fromarray(np.round(m * 255.0).astype(np.uint8)), path)


def overlay(image: Image.Image | np.ndarray, prob_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image (as RGB) with the coloured map blended over it. The colour's weight grows with
    the probability, from alpha / 4 (a faint blue tint) to alpha (red), so untouched regions
    stay close to the photo and suspicious ones stand out."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    img = img.convert("RGB")
    m = _as_unit(prob_map)
    if m.shape != (img.height, img.width):
        raise ValueError(f"map is {m.shape[1]}x{m.shape[0]}, image is {img.width}x{img.height}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = np.asarray(img, dtype=np.float32)
    weight = (alpha * (0.25 + 0.75 * m))[..., None]
    out = base * (1.0 - weight) + colormap(m).astype(np.float32) * weight
    return Image.fromarray(np.round(out).astype(np.uint8))


def save_overlay_png(image: Image.Image | np.ndarray, prob_map: np.ndarray, path: str | os.PathLike,
                     alpha: float = 0.5) -> Path:
    """RGB PNG of the image's size with the heatmap blended over it (see `overlay`)."""
    return _save(overlay(image, prob_map, alpha), path)


def overlay_grid(rows: list[tuple[Image.Image, np.ndarray | None, np.ndarray]], path: str | os.PathLike,
                 cell: int = 160) -> Path:
    """A contact sheet, one row per image: the image, its true mask (black if none), the predicted
    heatmap over the image. Each cell is resized to `cell` px high, aspect kept."""
    tiles = []
    for image, truth, pred in rows:
        img = image.convert("RGB")
        w = max(1, round(img.width * cell / img.height))
        mask = np.zeros((img.height, img.width), np.uint8) if truth is None else (np.asarray(truth) > 0).astype(np.uint8) * 255
        row = [img, Image.fromarray(mask).convert("RGB"), overlay(img, pred)]
        tiles.append([t.resize((w, cell), Image.BILINEAR) for t in row])
    width = max(sum(t.width for t in r) + 4 * len(r) for r in tiles) if tiles else cell
    sheet = Image.new("RGB", (width, max(1, len(tiles)) * (cell + 4)), (255, 255, 255))
    for i, r in enumerate(tiles):
        x = 0
        for t in r:
            sheet.paste(t, (x, i * (cell + 4)))
            x += t.width + 4
    return _save(sheet, path)
