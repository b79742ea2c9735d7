"""Native-resolution reading: overlapping square tiles over an image, and their maps stitched back.

A 14 x 14 patch grid over a whole photo squashed to 224 px cannot draw a region a few dozen
pixels wide. Read instead at the image's own resolution: cut `tile` x `tile` windows every
`stride` pixels (the last window of each row and column is moved in to end at the border, so
every pixel is covered and no window is padded), run the backbone and decoder on each window,
and average the windows' maps where they overlap. An image whose shorter side is below `tile`
is first upscaled (bicubic) so that side is exactly `tile`; the stitched map is resized back.

    origins(256, 224, 32)  -> [0, 32]
    origins(500, 224, 192) -> [0, 192, 276]
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of `length` pixels (length >= tile)."""
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be positive, got {tile} and {stride}")
    if length < tile:
        raise ValueError(f"an axis of {length} px is shorter than the {tile} px tile (upscale first)")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_scale(width: int, height: int, tile: int, max_side: int | None = None) -> float:
    """The resize factor before tiling: 1; or down so the longer side is at most `max_side` (a
    bound on the windows, hence the cost, of a large photo); but never so far that the shorter
    side falls below `tile` (a small image is upscaled until it is exactly `tile`)."""
    s = 1.0
    if max_side is not None and max(width, height) > max_side:
        s = max_side / max(width, height)
    return max(s, tile / min(width, height))


def tiled_size(width: int, height: int, tile: int, max_side: int | None = None) -> tuple[int, int]:
    """(W, H) of the image as it is tiled (after `tile_scale`)."""
    s = tile_scale(width, height, tile, max_side)
    if s == 1.0:
        return width, height
    return max(tile, round(width * s)), max(tile, round(height * s))


def boxes(width: int, height: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(left, top) of every window over an image of `tiled_size`, row by row."""
    return [(x, y) for y in origins(height, tile, stride) for x in origins(width, tile, stride)]


def cut(img: Image.Image, tile: int, stride: int,
        max_side: int | None = None) -> tuple[list[Image.Image], list[tuple[int, int]], tuple[int, int]]:
    """(windows, their (left, top), the tiled (W, H)) of a PIL image."""
    size = tiled_size(img.width, img.height, tile, max_side)
    if size != img.size:
        img = img.resize(size, Image.BICUBIC)
    where = boxes(size[0], size[1], tile, stride)
    return [img.crop((x, y, x + tile, y + tile)) for x, y in where], where, size


def cut_mask(mask: np.ndarray, tile: int, stride: int, max_side: int | None = None) -> np.ndarray:
    """(n, tile, tile) float32 windows of a float (H, W) mask, aligned with `cut` (area resize)."""
    h, w = mask.shape
    size = tiled_size(w, h, tile, max_side)
    m = np.asarray(mask, np.float32)
    if size != (w, h):
        m = np.clip(np.asarray(Image.fromarray(m).resize(size, Image.BOX), np.float32), 0.0, 1.0)
    return np.stack([m[y:y + tile, x:x + tile] for x, y in boxes(size[0], size[1], tile, stride)])


def stitch(maps: np.ndarray, where: list[tuple[int, int]], tiled: tuple[int, int],
           size: tuple[int, int] | None = None) -> np.ndarray:
    """Average (n, tile, tile) window maps (probabilities or logits) into one (H, W) map of the tiled image, each pixel the
    mean of the windows covering it; then resized (bilinear) to `size` = (W, H) if given."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or len(maps) != len(where):
        raise ValueError(f"expected {len(where)} (tile, tile) maps, got shape {maps.shape}")
    tile = maps.shape[1]
    w, h = tiled
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for m, (x, y) in zip(maps, where):
        total[y:y + tile, x:x + tile] += m
        count[y:y + tile, x:x + tile] += 1.0
    if (count == 0).any():
        raise ValueError("the windows do not cover the image")
    out = (total / count).astype(np.float32)
    if size is not None and tuple(size) != (w, h):
        out = np.asarray(Image.fromarray(out).resize(tuple(size), Image.BILINEAR), np.float32)
    return out
