"""One edit of one photo: `make_pair` (a random mechanism inside a random mask) and `make_real`,
both through the same final whole-image re-encoding."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ...imageops import jpeg_roundtrip
from .autoencoder import TinyAutoencoder
from .common import (
    DEFAULT_AREA,
    MASK_KINDS,
    MECHANISM_NAMES,
    _as_rgb_array,
    pick,
    _uniform,
    edited_mask,
)
from .masks import mask_shape
from .mechanisms import MECHANISMS


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
    return pick(rng, weights)


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
    kind = pick(rng, config.mask_kinds)
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


