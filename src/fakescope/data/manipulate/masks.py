"""Random masks of edited regions: box, ellipse, strokes (free-form brush), blob (object-like
smoothed polygon); the masked fraction of the image lies in the asked `area`."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .common import DEFAULT_AREA, MASK_KINDS, pick


def _count(m: Image.Image) -> int:
    return int(np.count_nonzero(np.asarray(m)))


def _box(h: int, w: int, rng: np.random.Generator, target: float) -> np.ndarray:
    aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
    bw = min(w, max(1.0, math.sqrt(target * aspect)))
    bh = min(h, max(1.0, target / bw))
    bw = min(w, max(1.0, target / bh))
    bw, bh = max(1, round(bw)), max(1, round(bh))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + bh, x0:x0 + bw] = 1
    return m


def _polygon_shape(h: int, w: int, rng: np.random.Generator, target: float, unit: np.ndarray) -> np.ndarray:
    """Draw the star-shaped polygon `unit` (Kx2, around the origin) scaled so it covers about
    `target` pixels, at a random centre that keeps it inside the image where the size allows."""
    x, y = unit[:, 0], unit[:, 1]
    unit_area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    scale = math.sqrt(target / max(unit_area, 1e-6))
    ext = np.abs(unit).max(axis=0)  # half extents of the unit shape
    fx, fy = rng.uniform(), rng.uniform()
    m = None
    for _ in range(8):
        rx, ry = ext[0] * scale, ext[1] * scale
        cx = rx + fx * (w - 2 * rx) if w > 2 * rx else w / 2
        cy = ry + fy * (h - 2 * ry) if h > 2 * ry else h / 2
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).polygon([(cx + px * scale, cy + py * scale) for px, py in unit], fill=1)
        m, got = np.asarray(img), _count(img)
        if got and abs(got - target) <= 0.04 * target:
            break
        scale *= float(np.clip(math.sqrt(target / max(got, 1)), 0.5, 2.0))
    return m.copy()


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _ellipse(h: int, w: int, rng: np.random.Generator, target: float) -> np.ndarray:
    aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    unit = np.stack([math.sqrt(aspect) * np.cos(t), np.sin(t) / math.sqrt(aspect)], axis=1)
    return _polygon_shape(h, w, rng, target, _rotate(unit, rng.uniform(0, math.pi)))


def _blob(h: int, w: int, rng: np.random.Generator, target: float) -> np.ndarray:
    """Object-like: a star-shaped polygon whose radius is 1 + a few random low-frequency harmonics
    (a smooth, irregular, single-piece outline, like a segmented object), stretched and rotated."""
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for j in range(1, 6):
        r += rng.uniform(0, 0.45) / j ** 1.2 * np.cos(j * t + rng.uniform(0, 2 * math.pi))
    r = np.maximum(r, 0.25)
    stretch = math.exp(rng.uniform(-0.5, 0.5))
    unit = np.stack([r * np.cos(t) * stretch, r * np.sin(t) / stretch], axis=1)
    return _polygon_shape(h, w, rng, target, _rotate(unit, rng.uniform(0, math.pi)))


def _strokes(h: int, w: int, rng: np.random.Generator, target: float, hi_px: float) -> np.ndarray:
    """Free-form brush strokes: random walks (smoothly turning direction, bouncing off the borders)
    drawn as thick polylines with round joints, added segment by segment until the area target."""
    side = min(h, w)
    img = Image.new("L", (w, h), 0)
    thickness = max(2.0, side * rng.uniform(0.03, 0.09))
    got = 0
    for _stroke in range(16):
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        angle = rng.uniform(0, 2 * math.pi)
        width = max(2, round(thickness * rng.uniform(0.75, 1.25)))
        for _vertex in range(int(rng.integers(3, 10))):
            angle += rng.normal(0, 0.7)
            length = side * rng.uniform(0.08, 0.3)
            nx, ny = x + length * math.cos(angle), y + length * math.sin(angle)
            if not 0 <= nx <= w - 1:  # bounce off the border: mirror the end point and the heading
                nx, angle = (-nx if nx < 0 else 2 * (w - 1) - nx), math.pi - angle
            if not 0 <= ny <= h - 1:
                ny, angle = (-ny if ny < 0 else 2 * (h - 1) - ny), -angle
            nx, ny = float(np.clip(nx, 0, w - 1)), float(np.clip(ny, 0, h - 1))
            before = img.copy()
            draw = ImageDraw.Draw(img)
            draw.line([(x, y), (nx, ny)], fill=1, width=width)
            rad = width / 2
            for px, py in ((x, y), (nx, ny)):
                draw.ellipse([px - rad, py - rad, px + rad, py + rad], fill=1)
            new = _count(img)
            if new > hi_px:  # this segment overshoots the largest allowed area: stop before it
                return np.asarray(before).copy()
            got, x, y = new, nx, ny
            if got >= target:
                return np.asarray(img).copy()
        thickness *= 1.3  # far from the target after a whole stroke: thicker brush
    return np.asarray(img).copy()


def mask_shape(kind: str, h: int, w: int, rng: np.random.Generator,
               area: tuple[float, float] = DEFAULT_AREA) -> np.ndarray:
    """One mask of the given kind, uint8 {0,1} HxW, covering a fraction of the image in `area`.

    The target fraction is drawn uniformly in `area`; the shape is fitted to it and, should pixel
    rounding or the image border push it outside the range, grown (3x3 max filter) or shrunk (3x3
    min filter) back into it. A box of the target size is the last resort (tiny images)."""
    lo, hi = area
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"area range must satisfy 0 < lo <= hi <= 1, got {area}")
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")
    n = h * w
    lo_px, hi_px = math.ceil(lo * n), math.floor(hi * n)
    lo_px, hi_px = max(1, lo_px), max(1, hi_px, lo_px)
    target = rng.uniform(lo, hi) * n
    if kind == "box":
        m = _box(h, w, rng, target)
    elif kind == "ellipse":
        m = _ellipse(h, w, rng, target)
    elif kind == "blob":
        m = _blob(h, w, rng, target)
    else:
        m = _strokes(h, w, rng, target, hi_px)
    for _ in range(64):
        got = int(m.sum())
        if lo_px <= got <= hi_px:
            return m
        grow = got < lo_px
        flt = ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3)
        nxt = (np.asarray(Image.fromarray(m, "L").filter(flt)) > 0).astype(np.uint8)
        n_next = int(nxt.sum())
        if n_next == got or (grow and n_next > hi_px) or (not grow and n_next < lo_px):
            break  # stuck, or one step would jump over the whole range
        m = nxt
    return _box(h, w, rng, min(max(target, lo_px), hi_px))


def random_mask(h: int, w: int, rng: np.random.Generator,
                kinds: Sequence[str] | Mapping[str, float] = MASK_KINDS,
                area: tuple[float, float] = DEFAULT_AREA) -> np.ndarray:
    """A random mask (uint8 {0,1}, HxW) of a kind drawn from `kinds` (names, or name -> weight),
    covering between area[0] and area[1] of the image (default 2%-35%)."""
    return mask_shape(pick(rng, kinds), h, w, rng, area)


