"""Edit mechanisms, each `(img uint8 HxWx3, mask HxW, rng, ...) -> uint8 HxWx3`, blended into the
original through a feathered mask: resynthesize, copy_move, splice, resample, blur, noise."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image

from ...imageops import gaussian_blur
from .autoencoder import TinyAutoencoder, default_autoencoder_dir
from .common import _as_mask, _as_rgb_array, _blend, _support_box, feather


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
    """Gaussian blur inside the region (imageops.gaussian_blur; blended, feathered edge).

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
    new[y0:y1, x0:x1] = np.asarray(gaussian_blur(crop, s))
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


