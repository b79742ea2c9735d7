"""Training views: the same random resizing, cropping and JPEG re-compression for both classes.

Why: in most fake/real collections the two classes differ in size, format and JPEG
history (camera JPEGs vs PNGs re-encoded once). A detector trained on clean files
learns those instead of generator traces. Each training image is seen as its clean
self plus `views - 1` augmented copies, drawn with a seed derived from its content
hash, so features of a view can be cached and reproduced.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from dataclasses import fields as fields_of

import numpy as np
from PIL import Image

from ..imageops import gaussian_blur, gaussian_noise, jpeg_roundtrip, rescale


@dataclass(frozen=True)
class AugmentConfig:
    crop_area: tuple[float, float] = (0.5, 1.0)      # fraction of the image kept by a random crop
    downscale: tuple[float, float] = (0.5, 1.0)      # random resize factor, applied with p_downscale
    p_downscale: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)         # random re-compression, applied with p_jpeg
    p_jpeg: float = 0.7
    p_blur: float = 0.1                              # mild Gaussian blur, sigma in 0.3..1.0
    p_flip: float = 0.5
    # thumbnail views: shrink the crop until its shorter side is a random size in thumbnail_side, so
    # both classes are also seen as the small web thumbnails a scan meets (CIFAKE-like 32 px images
    # look like nothing else to a detector trained on full-size images alone)
    p_thumbnail: float = 0.0
    thumbnail_side: tuple[int, int] = (32, 64)
    # "bicubic", or "any": each thumbnail made by one of Pillow's resamplers (RESAMPLERS), since the
    # thumbnails a scan meets come from many resizers and a detector should not key on one kernel
    thumbnail_resample: str = "bicubic"
    # sensor-like noise (before the JPEG draw), so noise added to a fake does not read as "real"
    p_noise: float = 0.0
    noise_sigma: tuple[float, float] = (1.0, 10.0)   # standard deviation in 8-bit units

    def signature(self) -> str:
        fields = asdict(self)
        if not self.p_thumbnail:  # views made before thumbnails existed keep their cache keys
            del fields["p_thumbnail"], fields["thumbnail_side"]
        if self.thumbnail_resample == "bicubic" or not self.p_thumbnail:  # and before the resampler was drawn
            del fields["thumbnail_resample"]
        if not self.p_noise:  # and those made before noise existed
            del fields["p_noise"], fields["noise_sigma"]
        return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:8]

    @classmethod
    def from_options(cls, options: dict) -> "AugmentConfig":
        """From `augment.<field>` options (as `--set augment.p_thumbnail=0.5` gives them); unknown fields raise."""
        defaults = {f.name: f.default for f in fields_of(cls)}
        values = {}
        for key, value in options.items():
            name = key.removeprefix("augment.")
            if name not in defaults:
                raise ValueError(f"unknown augment option {key!r}; known: {', '.join(sorted(defaults))}")
            default = defaults[name]
            try:  # the field's own type: a range stays a pair of numbers, a probability a number
                if isinstance(default, tuple):
                    if not isinstance(value, (list, tuple)) or len(value) != len(default):
                        raise ValueError
                    values[name] = tuple(type(d)(v) for d, v in zip(default, value))
                else:
                    values[name] = type(default)(value)
            except (TypeError, ValueError):
                like = list(default) if isinstance(default, tuple) else default
                raise ValueError(f"augment option {key!r}: expected a value like {like!r}, got {value!r}") from None
        if values.get("thumbnail_resample", "bicubic") not in THUMBNAIL_RESAMPLE:
            raise ValueError(f"augment option thumbnail_resample: one of {', '.join(THUMBNAIL_RESAMPLE)}, "
                             f"got {values['thumbnail_resample']!r}")
        return cls(**values)


def view_seed(sha256: str, view: int) -> int:
    return int(hashlib.sha256(f"{sha256}:{view}".encode()).hexdigest()[:12], 16)


def random_crop(img: Image.Image, rng: random.Random, area: tuple[float, float]) -> Image.Image:
    w, h = img.size
    frac = rng.uniform(*area)
    cw, ch = max(1, round(w * frac ** 0.5)), max(1, round(h * frac ** 0.5))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((left, top, left + cw, top + ch))


# what `thumbnail_resample="any"` draws from: aliased (nearest) to antialiased of every width
RESAMPLERS = {"nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
              "hamming": Image.Resampling.HAMMING, "bicubic": Image.Resampling.BICUBIC,
              "lanczos": Image.Resampling.LANCZOS}
THUMBNAIL_RESAMPLE = ("any", *RESAMPLERS)


def thumbnail(img: Image.Image, side: int, resample: str = "bicubic") -> Image.Image:
    """The image shrunk (antialiased bicubic, or another of RESAMPLERS) so its shorter side is `side`;
    a smaller image is kept."""
    factor = side / min(img.size)
    return rescale(img, factor, min_side=1, resample=RESAMPLERS[resample]) if factor < 1 else img


def augment(img: Image.Image, rng: random.Random, cfg: AugmentConfig = AugmentConfig()) -> Image.Image:
    img = random_crop(img, rng, cfg.crop_area)
    if cfg.p_thumbnail and rng.random() < cfg.p_thumbnail:  # drawn only when on: old views stay as they were
        side = rng.randint(*cfg.thumbnail_side)
        resample = rng.choice(list(RESAMPLERS)) if cfg.thumbnail_resample == "any" else cfg.thumbnail_resample
        img = thumbnail(img, side, resample)
    elif rng.random() < cfg.p_downscale:
        img = rescale(img, rng.uniform(*cfg.downscale), min_side=8)
    if rng.random() < cfg.p_blur:
        img = gaussian_blur(img, rng.uniform(0.3, 1.0))
    if cfg.p_noise and rng.random() < cfg.p_noise:  # drawn only when on, as thumbnails
        img = gaussian_noise(img, rng.uniform(*cfg.noise_sigma), np.random.default_rng(rng.getrandbits(64)))
    if rng.random() < cfg.p_flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < cfg.p_jpeg:
        img = jpeg_roundtrip(img, rng.randint(*cfg.jpeg_quality))
    return img


def make_view(img: Image.Image, sha256: str, view: int, cfg: AugmentConfig = AugmentConfig()) -> Image.Image:
    """View 0 is the image itself; view k > 0 a reproducible augmented copy."""
    return img if view == 0 else augment(img, random.Random(view_seed(sha256, view)), cfg)
