"""Local manipulations of real photos: (real image) -> (manipulated image, mask of edited pixels).

Why: a localiser (which pixels of a photo were edited?) needs many (image, mask) pairs, and the
shared data has only 192 CocoGlide triplets. Here real photos are edited locally, in ways that
leave the traces real edits leave, and the mask records where.

    rng = np.random.default_rng(0)
    fake, mask, info = make_pair(img, rng, ManipulationConfig(), autoencoder=load_autoencoder(d))
    real, zero = make_real(img, rng, ManipulationConfig())

Pieces:
  * masks      `random_mask(h, w, rng, kinds, area)`: box, ellipse, strokes (free-form brush),
               blob (object-like smoothed polygon); the masked fraction of the image lies in `area`.
  * mechanisms each `(img uint8 HxWx3, mask HxW, rng, ...) -> uint8 HxWx3`, blended into the
               original through a feathered (Gaussian-blurred) mask:
               resynthesize (through a TinyAutoencoder: a real decoder fingerprint, like
               latent-diffusion inpainting), copy_move, splice, resample, blur, noise.
  * make_pair / make_real  one random edit (or none) plus the same final whole-image JPEG
               re-encoding for both classes, so the edit is not the only compression difference.
  * generate_dataset  a CocoGlide-like folder (real/, fake/, mask/, table.csv), resumable.

Mask semantics: the returned mask is the binary mask of EDITED pixels: pixels whose blended value
comes at least half from the edit (feathered alpha >= 0.5). It is 1 there even where the new value
happens to equal the old one (a copy-move over flat sky), and 0 in the outer half of the feather
band, where pixels change by less than half the edit.

Everything random is drawn from the numpy Generator passed in, so one seed gives one output.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from ..images import ImageError, decode_image
from .augment import jpeg_roundtrip
from .samples import FAKE, Sample

MASK_KINDS = ("box", "ellipse", "strokes", "blob")
MECHANISM_NAMES = ("resynthesize", "copy_move", "splice", "resample", "blur", "noise")
DEFAULT_AREA = (0.02, 0.35)
MAX_SIDE = 1024


# ================================================================ helpers
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


def _pick(rng: np.random.Generator, weights: Mapping[str, float] | Sequence[str]) -> str:
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


# ================================================================ masks
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
    return mask_shape(_pick(rng, kinds), h, w, rng, area)


# ================================================================ the autoencoder
AUTOENCODER_FORMAT = "fakescope-tiny-autoencoder"
AUTOENCODER_CONFIG = "config.json"
AUTOENCODER_WEIGHTS = "model.safetensors"


class TinyAutoencoder(nn.Module):
    """A small convolutional autoencoder with a latent at 1/8 resolution, the shape of the
    latent-diffusion VAEs (SD: 4 channels at 1/8) at a tiny fraction of their size.

    Encoder: 3x3 conv, then three 4x4 stride-2 convs (1/2, 1/4, 1/8), then a 1x1 conv to
    `latent_channels`. Decoder: 3x3 conv, three (x2 upsample + 3x3 conv) stages and a final 3x3
    conv to RGB. `upsample="nearest"` is nearest-neighbour upsampling followed by a conv, as in the
    SD VAE decoder; `"transposed"` uses 4x4 stride-2 transposed convs (checkerboard-prone). SiLU
    activations, no normalisation (outputs do not depend on what else is in the batch).
    Pixels are in [-1, 1]; `reconstruct` takes and returns uint8 images.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 96), latent_channels: int = 8,
                 upsample: str = "nearest"):
        super().__init__()
        if len(channels) != 3:
            raise ValueError("channels must list 3 widths (one per resolution level)")
        if upsample not in ("nearest", "transposed"):
            raise ValueError("upsample must be 'nearest' or 'transposed'")
        c0, c1, c2 = (int(c) for c in channels)
        self.config = {"channels": [c0, c1, c2], "latent_channels": int(latent_channels), "upsample": upsample}
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1), act(),
            nn.Conv2d(c0, c0, 4, stride=2, padding=1), act(),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),
            nn.Conv2d(c2, int(latent_channels), 1),
        )

        def up(cin, cout):
            if upsample == "transposed":
                return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), act()]
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), act()]

        self.decoder = nn.Sequential(
            nn.Conv2d(int(latent_channels), c2, 3, padding=1), act(),
            *up(c2, c1), *up(c1, c0), *up(c0, c0),
            nn.Conv2d(c0, 3, 3, padding=1),
        )

    def encode(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.encoder(x)

    def decode(self, z: "torch.Tensor") -> "torch.Tensor":
        return self.decoder(z)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.decode(self.encode(x))

    @torch.no_grad()
    def reconstruct(self, img: np.ndarray, latent_noise: float = 0.0, latent_mask: np.ndarray | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 HxWx3 -> its uint8 HxWx3 reconstruction. The image is reflect-padded by 8 pixels
        and up to a multiple of 8 (so borders have context), then cropped back. `latent_noise` adds
        Gaussian noise of that many latent standard deviations (where `latent_mask` at the image's
        resolution is set, everywhere when None), drawn from `rng`: new content, same decoder."""
        h, w = img.shape[:2]
        pad_b, pad_r = 8 + (-(h + 16)) % 8, 8 + (-(w + 16)) % 8
        mode = "reflect" if min(h, w) > 8 else "edge"
        x = np.pad(img, ((8, pad_b), (8, pad_r), (0, 0)), mode=mode)
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        was_training = self.training
        self.eval()
        try:
            z = self.encode(t)
            if latent_noise > 0:
                if rng is None:
                    raise ValueError("latent_noise needs an rng")
                eps = torch.from_numpy(rng.standard_normal(tuple(z.shape)).astype(np.float32))
                if latent_mask is not None:
                    lm = np.pad((np.asarray(latent_mask) > 0).astype(np.float32), ((8, pad_b), (8, pad_r)))
                    lm_t = torch.from_numpy(lm)[None, None]
                    lm_t = torch.nn.functional.adaptive_max_pool2d(lm_t, tuple(z.shape[-2:]))
                    eps = eps * lm_t
                z = z + latent_noise * z.std() * eps
            y = self.decode(z)
        finally:
            self.train(was_training)
        y = ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
        return np.ascontiguousarray(y[8:8 + h, 8:8 + w])


def _gradient_l1(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def train_autoencoder(images: Iterable, steps: int = 2000, batch_size: int = 16, crop: int = 128,
                      lr: float = 1e-3, seed: int = 0, grad_weight: float = 0.5,
                      channels: Sequence[int] = (32, 64, 96), latent_channels: int = 8,
                      upsample: str = "nearest", history: list | None = None,
                      on_step: Callable[[int, float], None] | None = None) -> TinyAutoencoder:
    """Train a TinyAutoencoder to reconstruct random crops of `images` (PIL images or uint8 HxWx3
    arrays; all are held in memory). Loss: L1 on pixels + `grad_weight` x L1 on horizontal and
    vertical pixel differences (keeps edges sharper than L1 alone). Random `crop`x`crop` crops
    (images smaller than the crop are first upscaled, bicubic) with random horizontal flips; Adam.

    Seeded: the weights' init (torch, in a forked RNG: the global torch RNG is left as it was) and
    the crops (numpy) come from `seed`. The per-step loss is appended to `history` when given and
    passed to `on_step(step, loss)`. Returns the model in eval mode."""
    if crop % 8 or crop < 8:
        raise ValueError("crop must be a positive multiple of 8")
    pool = []
    for im in images:
        a = _as_rgb_array(im)
        h, w = a.shape[:2]
        if min(h, w) < crop:
            f = crop / min(h, w)
            a = np.asarray(Image.fromarray(a).resize((max(crop, round(w * f)), max(crop, round(h * f))),
                                                     Image.BICUBIC))
        pool.append(a)
    if not pool:
        raise ValueError("no images to train the autoencoder on")
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyAutoencoder(channels, latent_channels, upsample)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(int(steps)):
        batch = np.empty((batch_size, crop, crop, 3), np.uint8)
        for i in range(batch_size):
            a = pool[int(rng.integers(len(pool)))]
            y0 = int(rng.integers(0, a.shape[0] - crop + 1))
            x0 = int(rng.integers(0, a.shape[1] - crop + 1))
            c = a[y0:y0 + crop, x0:x0 + crop]
            batch[i] = c[:, ::-1] if rng.random() < 0.5 else c
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = model(x)
        loss = (y - x).abs().mean()
        if grad_weight:
            loss = loss + grad_weight * _gradient_l1(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if history is not None:
            history.append(value)
        if on_step is not None:
            on_step(step, value)
    return model.eval()


def save_autoencoder(model: TinyAutoencoder, directory: str | os.PathLike) -> Path:
    """Write `config.json` + `model.safetensors` (tensors only, no pickle) into `directory`."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / AUTOENCODER_WEIGHTS))
    (d / AUTOENCODER_CONFIG).write_text(json.dumps({"format": AUTOENCODER_FORMAT, "version": 1, **model.config},
                                                   indent=2) + "\n")
    return d


def load_autoencoder(directory: str | os.PathLike) -> TinyAutoencoder:
    """The TinyAutoencoder saved in `directory` by `save_autoencoder`, in eval mode (strict load)."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path, w_path = d / AUTOENCODER_CONFIG, d / AUTOENCODER_WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"{d}: no trained autoencoder here (expected {AUTOENCODER_CONFIG} and "
                                f"{AUTOENCODER_WEIGHTS}, written by save_autoencoder)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != AUTOENCODER_FORMAT:
        raise ValueError(f"{cfg_path}: not a {AUTOENCODER_FORMAT} config")
    model = TinyAutoencoder(cfg["channels"], cfg["latent_channels"], cfg.get("upsample", "nearest"))
    model.load_state_dict(load_file(str(w_path)), strict=True)
    return model.eval()


def default_autoencoder_dir() -> Path:
    """Where the packaged autoencoder lives: `fakescope/models/autoencoder` inside the installed
    package. It may not exist yet (train one and `save_autoencoder` it there)."""
    return Path(__file__).resolve().parent.parent / "models" / "autoencoder"


# ================================================================ mechanisms
def resynthesize(img, mask, rng: np.random.Generator, autoencoder: TinyAutoencoder | None = None, *,
                 feather_radius: float = 2.0, latent_noise: float = 0.0, margin: int = 24) -> np.ndarray:
    """Region re-synthesis through an autoencoder.

    Why it mimics a real edit: latent-diffusion inpainting (SD inpainting, and most "generative
    fill" tools) generates the region in a VAE latent at 1/8 resolution and decodes it, so the
    edited pixels carry the decoder's fingerprint (its upsampling and smoothing statistics) while
    the rest of the photo keeps the camera's. Here a crop around the mask (bounding box + `margin`)
    is encoded to the TinyAutoencoder's 1/8 latent, optionally perturbed inside the mask
    (`latent_noise` latent standard deviations, so the content also changes a little), decoded,
    and pasted inside the mask with a feathered edge (Gaussian, sigma `feather_radius`), as
    inpainting pipelines blend the decoded region back into the original.
    """
    if autoencoder is None:
        raise ValueError(
            "resynthesize needs a trained TinyAutoencoder: pass autoencoder=load_autoencoder(dir) "
            f"(the packaged one lives in {default_autoencoder_dir()}; train one with train_autoencoder "
            "and save_autoencoder)")
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    alpha = feather(m, feather_radius)
    box = _support_box(alpha, margin)
    if box is None:
        return img.copy()
    y0, y1, x0, x1 = box
    new = img.copy()
    new[y0:y1, x0:x1] = autoencoder.reconstruct(np.ascontiguousarray(img[y0:y1, x0:x1]), latent_noise,
                                                m[y0:y1, x0:x1], rng)
    return _blend(img, new, alpha)


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = img[y - dy, x - dx], reflecting at the borders."""
    h, w = img.shape[:2]
    py, px = min(abs(dy), h - 1), min(abs(dx), w - 1)
    p = np.pad(img, ((py, py), (px, px), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    dy, dx = int(np.clip(dy, -py, py)), int(np.clip(dx, -px, px))
    return p[py - dy:py - dy + h, px - dx:px - dx + w]


def copy_move(img, mask, rng: np.random.Generator, *, feather_radius: float = 2.0,
              min_shift: float = 0.15) -> np.ndarray:
    """Copy another part of the same image into the mask (blended, feathered edge).

    Why it mimics a real edit: copy-move (clone stamp, duplicating or hiding an object with nearby
    texture) is the classic manual forgery. The pasted content is genuine camera content with the
    same noise and colour statistics, so only the seam and the duplication betray it. The source
    is the mask shifted by at least `min_shift` of the image side; a shift that keeps the source
    inside the image is preferred, otherwise the image is reflected at its border.
    """
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    h, w = m.shape
    alpha = feather(m, feather_radius)
    box = _support_box(alpha, 0)
    if box is None:
        return img.copy()
    y0, y1, x0, x1 = box
    # out[y] = img[y - dy]: the source rows y0-dy .. y1-dy must lie in [0, h)
    dy_rng, dx_rng = (y1 - h, y0), (x1 - w, x0)
    need = max(1, round(min_shift * min(h, w)))
    dy = dx = 0
    for _ in range(32):
        dy = int(rng.integers(-h // 2, h // 2 + 1))
        dx = int(rng.integers(-w // 2, w // 2 + 1))
        if max(abs(dy), abs(dx)) >= need and dy_rng[0] <= dy <= dy_rng[1] and dx_rng[0] <= dx <= dx_rng[1]:
            break
    if max(abs(dy), abs(dx)) < need:
        dx = need if dx >= 0 else -need
    return _blend(img, _shifted(img, dy, dx), alpha)


def _donor_canvas(donor, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The donor resized (bicubic, aspect kept) to cover h x w, then randomly cropped to it."""
    d = Image.fromarray(_as_rgb_array(donor))
    f = max(h / d.height, w / d.width)
    size = (max(w, math.ceil(d.width * f)), max(h, math.ceil(d.height * f)))
    if size != d.size:
        d = d.resize(size, Image.BICUBIC)
    x0, y0 = int(rng.integers(0, d.width - w + 1)), int(rng.integers(0, d.height - h + 1))
    return np.asarray(d)[y0:y0 + h, x0:x0 + w]


def splice(img, mask, rng: np.random.Generator, donor=None, *, feather_radius: float = 2.0,
           match_colour: bool = True) -> np.ndarray:
    """Paste the masked region from another real image (`donor`), blended at a feathered edge.

    Why it mimics a real edit: splicing (pasting an object or patch from another photo) brings in
    content with another camera's noise, demosaicing, JPEG history and lighting. The donor is
    scaled to cover this image and randomly cropped, then the mask's region is taken from it.
    With `match_colour`, each channel of the pasted region is shifted and scaled so its mean and
    standard deviation inside the mask equal the original region's (std ratio clipped to 0.5-2),
    as an editor would colour-correct a paste, so the region is not trivially off-colour.
    """
    if donor is None:
        raise ValueError("splice needs a donor image (another real photo)")
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    h, w = m.shape
    alpha = feather(m, feather_radius)
    src = _donor_canvas(donor, h, w, rng).astype(np.float32)
    if match_colour and m.any():
        inside = m.astype(bool)
        ref = img.astype(np.float32)
        for c in range(3):
            s_mean, s_std = src[..., c][inside].mean(), src[..., c][inside].std()
            r_mean, r_std = ref[..., c][inside].mean(), ref[..., c][inside].std()
            ratio = float(np.clip(r_std / s_std, 0.5, 2.0)) if s_std > 1e-3 else 1.0
            src[..., c] = (src[..., c] - s_mean) * ratio + r_mean
    return _blend(img, np.clip(np.rint(src), 0, 255).astype(np.uint8), alpha)


_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
            "lanczos": Image.LANCZOS, "box": Image.BOX}


def resample(img, mask, rng: np.random.Generator, *, feather_radius: float = 2.0,
             factor: float | None = None, down: str | None = None, up: str | None = None) -> np.ndarray:
    """Locally downscale and re-upscale the region (blended, feathered edge).

    Why it mimics a real edit: a pasted or regenerated region is very often resized (an object
    scaled to fit, a patch generated at low resolution and upsampled), which leaves interpolation
    traces: lost high frequencies and the periodic correlations of bilinear/bicubic kernels, unlike
    the surrounding camera pixels. `factor` (default: random 0.3-0.8) is the downscale factor;
    `down`/`up` name the PIL filters (default: random among bilinear/bicubic/lanczos/box down,
    bilinear/bicubic up).
    """
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    alpha = feather(m, feather_radius)
    box = _support_box(alpha, 8)
    if box is None:
        return img.copy()
    f = float(rng.uniform(0.3, 0.8)) if factor is None else float(factor)
    down = down or ("bilinear", "bicubic", "lanczos", "box")[int(rng.integers(4))]
    up = up or ("bilinear", "bicubic")[int(rng.integers(2))]
    y0, y1, x0, x1 = box
    crop = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    small = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))), _FILTERS[down])
    new = img.copy()
    new[y0:y1, x0:x1] = np.asarray(small.resize(crop.size, _FILTERS[up]))
    return _blend(img, new, alpha)


def blur(img, mask, rng: np.random.Generator, *, feather_radius: float = 2.0,
         sigma: float | None = None) -> np.ndarray:
    """Gaussian blur inside the region (PIL ImageFilter.GaussianBlur; blended, feathered edge).

    Why it mimics a real edit: local smoothing is how retouching hides details (skin, plates,
    faces, removed objects' seams), and generated regions are often smoother than camera noise.
    `sigma` defaults to a random 0.8-3.0 pixels.
    """
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    alpha = feather(m, feather_radius)
    s = float(rng.uniform(0.8, 3.0)) if sigma is None else float(sigma)
    box = _support_box(alpha, int(math.ceil(3 * s)) + 2)
    if box is None:
        return img.copy()
    y0, y1, x0, x1 = box
    new = img.copy()
    crop = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    new[y0:y1, x0:x1] = np.asarray(crop.filter(ImageFilter.GaussianBlur(s)))
    return _blend(img, new, alpha)


def noise(img, mask, rng: np.random.Generator, *, feather_radius: float = 2.0,
          sigma: float | None = None, kind: str | None = None) -> np.ndarray:
    """Add noise inside the region (blended, feathered edge).

    Why it mimics a real edit: the noise level of a photo is fairly uniform (sensor + ISO), and
    an edited region (re-rendered, pasted from another photo, or "grain-matched" by hand) usually
    has a different noise level or texture. `kind` "gaussian": i.i.d. N(0, sigma) per pixel and
    channel; "poisson": signal-dependent shot noise, value ~ Poisson(x * k) / k with k chosen so the
    noise standard deviation at mid-grey is `sigma`. `sigma` defaults to a random 2-10 (8-bit
    units), `kind` to a random one of the two.
    """
    img = _as_rgb_array(img)
    m = _as_mask(mask, img.shape[:2])
    alpha = feather(m, feather_radius)
    s = float(rng.uniform(2.0, 10.0)) if sigma is None else float(sigma)
    kind = kind or ("gaussian", "poisson")[int(rng.integers(2))]
    box = _support_box(alpha, 0)
    if box is None:
        return img.copy()
    y0, y1, x0, x1 = box
    x = img[y0:y1, x0:x1].astype(np.float32)
    if kind == "gaussian":
        y = x + rng.normal(0.0, s, size=x.shape).astype(np.float32)
    elif kind == "poisson":
        k = 128.0 / (s * s)  # std of Poisson(x k)/k is sqrt(x / k): = s at x = 128
        y = rng.poisson(x * k).astype(np.float32) / k
    else:
        raise ValueError("noise kind must be 'gaussian' or 'poisson'")
    new = img.copy()
    new[y0:y1, x0:x1] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return _blend(img, new, alpha)


MECHANISMS: dict[str, Callable[..., np.ndarray]] = {
    "resynthesize": resynthesize, "copy_move": copy_move, "splice": splice,
    "resample": resample, "blur": blur, "noise": noise,
}


# ================================================================ configuration
def _default_mechanisms() -> dict[str, float]:
    # Resynthesis is the closest to AI inpainting, the localiser's target; the others teach
    # "locally edited" in general and keep it from keying on one decoder only.
    return {"resynthesize": 4.0, "splice": 1.5, "copy_move": 1.5, "resample": 1.0, "blur": 1.0, "noise": 1.0}


def _default_mask_kinds() -> dict[str, float]:
    return {"box": 1.0, "ellipse": 1.0, "strokes": 1.5, "blob": 2.5}


@dataclass(frozen=True)
class ManipulationConfig:
    mechanisms: Mapping[str, float] = field(default_factory=_default_mechanisms)  # name -> weight
    mask_kinds: Mapping[str, float] = field(default_factory=_default_mask_kinds)  # name -> weight
    area: tuple[float, float] = DEFAULT_AREA             # masked fraction of the image
    feather: tuple[float, float] = (0.5, 3.0)            # blend-edge Gaussian sigma, pixels
    jpeg_quality: tuple[int, int] = (70, 98)             # final whole-image JPEG re-encoding ...
    p_jpeg: float = 1.0                                  # ... applied with this probability (reals too)
    p_colour_match: float = 0.7                          # splice: match mean/std inside the region
    blur_sigma: tuple[float, float] = (0.8, 3.0)
    noise_sigma: tuple[float, float] = (2.0, 10.0)       # 8-bit units
    resample_factor: tuple[float, float] = (0.3, 0.8)    # downscale factor before re-upscaling
    latent_noise: tuple[float, float] = (0.0, 0.3)       # resynthesize: latent perturbation (in stds)

    def __post_init__(self):
        for name, table, known in (("mechanisms", self.mechanisms, MECHANISM_NAMES),
                                   ("mask_kinds", self.mask_kinds, MASK_KINDS)):
            bad = set(table) - set(known)
            if bad:
                raise ValueError(f"unknown {name}: {sorted(bad)}; known: {', '.join(known)}")
            if any(v < 0 for v in table.values()) or not any(v > 0 for v in table.values()):
                raise ValueError(f"{name} weights must be >= 0 with at least one > 0")
        for name in ("area", "feather", "jpeg_quality", "blur_sigma", "noise_sigma", "resample_factor",
                     "latent_noise"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError("area must lie in (0, 1]")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError("jpeg_quality must lie in 1..100")

    def signature(self) -> str:
        d = asdict(self)
        d["mechanisms"], d["mask_kinds"] = sorted(d["mechanisms"].items()), sorted(d["mask_kinds"].items())
        return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:8]


def available_mechanisms(config: ManipulationConfig, autoencoder=None, has_donors: bool = False) -> dict[str, float]:
    """The config's mechanism weights without those that cannot run: resynthesize without an
    autoencoder, splice without donors."""
    return {k: v for k, v in config.mechanisms.items() if v > 0
            and not (k == "resynthesize" and autoencoder is None) and not (k == "splice" and not has_donors)}


def choose_mechanism(rng: np.random.Generator, config: ManipulationConfig, autoencoder=None,
                     has_donors: bool = False) -> str:
    weights = available_mechanisms(config, autoencoder, has_donors)
    if not weights:
        raise ValueError("no mechanism can run: the config only enables resynthesize/splice, "
                         "and no autoencoder/donors were given")
    return _pick(rng, weights)


def _draw_jpeg(rng: np.random.Generator, config: ManipulationConfig) -> int | None:
    use = rng.random() < config.p_jpeg
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return quality if use else None


def final_reencode(img, rng: np.random.Generator, config: ManipulationConfig) -> np.ndarray:
    """The last step for reals and fakes alike: with probability p_jpeg, a JPEG round trip of the
    WHOLE image at a quality drawn from config.jpeg_quality. Both classes share the final
    compression, so it is not a class cue; on a JPEG photo the edited region is then compressed
    once while the rest is compressed twice, as in real edits of JPEG photos."""
    return _reencode(_as_rgb_array(img), _draw_jpeg(rng, config))


def _reencode(img: np.ndarray, quality: int | None) -> np.ndarray:
    if quality is None:
        return img.copy()
    return np.asarray(jpeg_roundtrip(Image.fromarray(img), quality))


# ================================================================ pairs
def make_pair(img, rng: np.random.Generator, config: ManipulationConfig = ManipulationConfig(),
              autoencoder: TinyAutoencoder | None = None, donors: Sequence = (),
              mechanism: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """One random local edit of a real image.

    Returns (manipulated uint8 HxWx3, mask uint8 {0,1} HxW, info) where info has `mechanism`,
    `mask_kind`, `area` (fraction of the image in the returned mask) and `feather`, `jpeg`.
    The mechanism is drawn from config.mechanisms among those that can run (resynthesize needs
    `autoencoder`, splice needs `donors`: other real images), unless `mechanism` names one.
    The mask is drawn, the edit blended through its feathered version, and the returned mask is
    that feather binarised at 0.5 (see the module docstring). Should feathering erase more than
    half of a thin mask (strokes), the feather radius is halved until it does not.
    The whole output then gets the final re-encoding (`final_reencode`), as `make_real` does.
    """
    img = _as_rgb_array(img)
    h, w = img.shape[:2]
    kind = _pick(rng, config.mask_kinds)
    m = mask_shape(kind, h, w, rng, config.area)
    radius = _uniform(rng, config.feather)
    final = edited_mask(m, radius)
    while radius > 0.25 and final.sum() < 0.5 * m.sum():
        radius /= 2
        final = edited_mask(m, radius)
    if mechanism is None:
        mechanism = choose_mechanism(rng, config, autoencoder, bool(donors))
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; known: {', '.join(MECHANISM_NAMES)}")
    kw: dict = {"feather_radius": radius}
    if mechanism == "resynthesize":
        kw.update(autoencoder=autoencoder, latent_noise=_uniform(rng, config.latent_noise))
    elif mechanism == "splice":
        if not donors:
            raise ValueError("splice needs donors (other real images)")
        kw.update(donor=donors[int(rng.integers(len(donors)))], match_colour=bool(rng.random() < config.p_colour_match))
    elif mechanism == "resample":
        kw.update(factor=_uniform(rng, config.resample_factor))
    elif mechanism == "blur":
        kw.update(sigma=_uniform(rng, config.blur_sigma))
    elif mechanism == "noise":
        kw.update(sigma=_uniform(rng, config.noise_sigma))
    edited = MECHANISMS[mechanism](img, m, rng, **kw)
    jpeg = _draw_jpeg(rng, config)
    out = _reencode(edited, jpeg)
    info = {"mechanism": mechanism, "mask_kind": kind, "area": float(final.mean()),
            "feather": round(radius, 3), "jpeg": jpeg}
    return out, final, info


def make_real(img, rng: np.random.Generator, config: ManipulationConfig = ManipulationConfig()
              ) -> tuple[np.ndarray, np.ndarray]:
    """A real image through the same final re-encoding as make_pair's output, with an all-zero mask."""
    img = _as_rgb_array(img)
    return _reencode(img, _draw_jpeg(rng, config)), np.zeros(img.shape[:2], np.uint8)


# ================================================================ datasets
TABLE_COLUMNS = ("real", "fake", "mask", "prompt", "mechanism", "mask_kind", "area")
MIN_SIDE = 16


@dataclass
class GenerateReport:
    out_dir: Path
    images: int = 0                 # real input images considered
    fakes_written: int = 0
    reals_written: int = 0
    skipped: int = 0                # outputs that already existed (resume)
    ignored_fakes: int = 0          # input samples labelled fake: never edited
    errors: list = field(default_factory=list)  # [(path, "<code>: <message>")]: inputs skipped
    notes: list = field(default_factory=list)   # things worth knowing that are not errors


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def _names(samples: Sequence[Sample]) -> list[str]:
    """File stems for the outputs: the input's stem, plus a hash of its full path when stems collide."""
    stems = [_safe_name(Path(s.path.split("::")[-1]).stem) for s in samples]
    seen: dict[str, int] = {}
    for st in stems:
        seen[st] = seen.get(st, 0) + 1
    return [st if seen[st] == 1 else f"{st}_{hashlib.sha1(s.path.encode()).hexdigest()[:8]}"
            for st, s in zip(stems, samples)]


def _load_rgb(sample: Sample, max_side: int) -> np.ndarray:
    # JPEG DCT scaling decodes big photos straight at >= max_side (both sides), before the resize
    img = decode_image(sample.data if sample.data is not None else sample.path, name=sample.path,
                       draft_size=max_side)
    if max(img.size) > max_side:
        f = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    a = np.asarray(img, dtype=np.uint8)
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{a.shape[1]}x{a.shape[0]} image, too small to edit (min side {MIN_SIDE})", sample.path)
    return a


def _save_png(a: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(a).save(tmp, format="PNG")
    os.replace(tmp, path)


def _read_table(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                key = r.get("fake") or r.get("real")
                if key:
                    rows[key] = {c: r.get(c, "") or "" for c in TABLE_COLUMNS}
    return rows


def generate_dataset(samples: Iterable, out_dir: str | os.PathLike, n_per_image: int = 1,
                     config: ManipulationConfig = ManipulationConfig(), seed: int = 0,
                     autoencoder: TinyAutoencoder | str | os.PathLike | None = None,
                     real_fraction: float = 0.3, max_side: int = MAX_SIDE,
                     log: Callable[[str], None] | None = None) -> GenerateReport:
    """Edit real images into a CocoGlide-like folder:

        out_dir/real/<name>.png       the real image after the same final re-encoding (zero mask)
        out_dir/fake/<name>_<k>.png   k = 0 .. n_per_image-1, one random edit each
        out_dir/mask/<name>_<k>.png   its mask, 0/255 8-bit PNG
        out_dir/table.csv             real,fake,mask,prompt,mechanism,mask_kind,area (paths relative
                                      to out_dir; prompt empty; area = masked fraction)

    `samples`: Sample records (e.g. from `load_labelled`) or paths. Samples labelled fake are
    ignored (their untouched pixels are not real). <name> is the input's file stem (plus a short
    hash of its path when two inputs share a stem).

    `real_fraction`: the expected fraction of real images among the outputs. Each input's real
    copy is written with probability p = real_fraction * n_per_image / (1 - real_fraction), capped
    at 1 (so 0.3 with one edit per image gives p = 0.43; with 3 edits per image every real is
    written and reals are 25%). The table row of an image without a real copy has `real` empty.

    Images whose longer side exceeds `max_side` (default 1024) are first downscaled (JPEG DCT
    scaling where it keeps both sides >= max_side, then Lanczos) so it equals max_side: edits stay at a scale the localiser sees, and generation stays fast. The
    real copy goes through the same resize, so resampling is not a class cue.

    Reproducible and resumable: every output has its own seed (from `seed`, the name, k), so an
    output that already exists (file present, and for fakes their row in table.csv) is skipped and
    a rerun only fills in what is missing, identically. Files are written atomically; rows are
    appended as they are made and the table is rewritten in input order at the end.
    Splice donors are other inputs, chosen per edit by seed. An input that cannot be decoded (or
    fails to edit) is reported in `errors` (and through `log`, default stderr) and skipped.
    Resynthesize needs `autoencoder` (a model, or a directory for `load_autoencoder`); without one
    it is left out of the mechanism mix (noted in `notes`).
    """
    if n_per_image < 1:
        raise ValueError("n_per_image must be >= 1")
    if not 0 <= real_fraction < 1:
        raise ValueError("real_fraction must be in [0, 1)")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if isinstance(autoencoder, (str, os.PathLike)):
        autoencoder = load_autoencoder(autoencoder)
    out = Path(out_dir)
    report = GenerateReport(out)
    items: list[Sample] = []
    for s in samples:
        s = s if isinstance(s, Sample) else Sample(path=os.fspath(s))
        if s.label == FAKE:
            report.ignored_fakes += 1
        else:
            items.append(s)
    report.images = len(items)
    if report.ignored_fakes:
        report.notes.append(f"{report.ignored_fakes} samples labelled fake were ignored")
    if autoencoder is None and config.mechanisms.get("resynthesize", 0) > 0:
        report.notes.append("resynthesize left out: no autoencoder given")
    if len(items) < 2 and config.mechanisms.get("splice", 0) > 0:
        report.notes.append("splice left out: it needs at least two input images")
    for note in report.notes:
        log(f"note: {note}")

    for sub in ("real", "fake", "mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    table = out / "table.csv"
    rows = _read_table(table)
    old_keys = list(rows)
    p_real = min(1.0, real_fraction * n_per_image / (1 - real_fraction))
    names = _names(items)

    def append_row(row: dict) -> None:
        new_file = not table.is_file() or table.stat().st_size == 0
        with open(table, "a", newline="", encoding="utf-8") as f:
            wr = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
            if new_file:
                wr.writeheader()
            wr.writerow(row)

    def report_error(path: str, message: str) -> None:
        report.errors.append((path, message))
        log(f"skipped {path}: {message}")

    from ..progress import progress

    order: list[str] = []
    with progress(total=len(items), desc="manipulate") as bar:
        for i, (sample, name) in enumerate(zip(items, names)):
            bar.update(1)
            real_rng = np.random.default_rng(_seed_from(seed, name, "real"))
            want_real = bool(real_rng.random() < p_real)
            real_rel = f"real/{name}.png"
            need_real = want_real and not (out / real_rel).is_file()
            todo = []
            for k in range(n_per_image):
                fake_rel = f"fake/{name}_{k}.png"
                order.append(fake_rel)
                done = fake_rel in rows and (out / fake_rel).is_file() and (out / rows[fake_rel]["mask"]).is_file()
                if done:
                    report.skipped += 1
                else:
                    todo.append(k)
            if want_real and not need_real:
                report.skipped += 1
            if not todo and not need_real:
                continue
            try:
                img = _load_rgb(sample, max_side)
            except ImageError as e:
                report_error(sample.path, e.reason)
                continue
            try:
                if need_real:
                    real, _ = make_real(img, real_rng, config)
                    _save_png(real, out / real_rel)
                    report.reals_written += 1
                for k in todo:
                    fake_rel, mask_rel = f"fake/{name}_{k}.png", f"mask/{name}_{k}.png"
                    choice = np.random.default_rng(_seed_from(seed, name, k, "choice"))
                    mech = choose_mechanism(choice, config, autoencoder, has_donors=len(items) > 1)
                    donors = []
                    if mech == "splice":
                        j = int(choice.integers(len(items) - 1))
                        j += j >= i
                        try:
                            donors.append(_load_rgb(items[j], max_side))
                        except ImageError as e:
                            report.notes.append(f"{fake_rel}: donor {items[j].path} unusable ({e.code}); "
                                                "another mechanism used")
                            mech = choose_mechanism(choice, config, autoencoder, has_donors=False)
                    rng = np.random.default_rng(_seed_from(seed, name, k))
                    fake, mask, info = make_pair(img, rng, config, autoencoder, donors, mechanism=mech)
                    _save_png(mask * np.uint8(255), out / mask_rel)
                    _save_png(fake, out / fake_rel)
                    row = {"real": real_rel if want_real else "", "fake": fake_rel, "mask": mask_rel, "prompt": "",
                           "mechanism": info["mechanism"], "mask_kind": info["mask_kind"],
                           "area": f"{info['area']:.4f}"}
                    rows[fake_rel] = row
                    append_row(row)
                    report.fakes_written += 1
            except Exception as e:  # one image's failure is that image's problem only
                report_error(sample.path, f"manipulation_failed: {type(e).__name__}: {e}")

    # canonical table: input order, then rows of earlier runs for inputs not given this time
    given = set(order)
    keys = [k for k in order if k in rows] + [k for k in old_keys if k not in given]
    tmp = table.with_name(table.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        wr.writeheader()
        for key in keys:
            wr.writerow(rows[key])
    os.replace(tmp, table)
    return report


__all__ = [
    "MASK_KINDS", "MECHANISM_NAMES", "MECHANISMS", "TABLE_COLUMNS",
    "random_mask", "mask_shape", "feather", "edited_mask",
    "TinyAutoencoder", "train_autoencoder", "save_autoencoder", "load_autoencoder", "default_autoencoder_dir",
    "resynthesize", "copy_move", "splice", "resample", "blur", "noise",
    "ManipulationConfig", "available_mechanisms", "choose_mechanism", "final_reencode",
    "make_pair", "make_real", "generate_dataset", "GenerateReport",
]
