"""The deterministic image operations that training views, robustness tests and synthetic edits
share: JPEG re-compression, Gaussian blur, rescaling, additive noise. One implementation each, so a "JPEG q75"
means the same bytes wherever it is applied (Pillow's libjpeg, default 4:2:0 chroma subsampling).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def jpeg_bytes(img: Image.Image, quality: float) -> bytes:
    """The image (as RGB) encoded as JPEG at `quality` (rounded to an integer, 1..95)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(round(quality)))
    return buf.getvalue()


def jpeg_roundtrip(img: Image.Image, quality: float) -> Image.Image:
    """Re-compress as JPEG at `quality` and decode again (RGB)."""
    out = Image.open(io.BytesIO(jpeg_bytes(img, quality)))
    out.load()
    return out.convert("RGB")


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels (Pillow's GaussianBlur radius)."""
    return img.filter(ImageFilter.GaussianBlur(float(sigma)))


def rescale(img: Image.Image, factor: float, min_side: int = 1,
            resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize by `factor` (bicubic by default), each side rounded and at least `min_side` px."""
    size = (max(min_side, round(img.width * factor)), max(min_side, round(img.height * factor)))
    return img.resize(size, resample)


def gaussian_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian noise of standard deviation `sigma` in 8-bit units, rounded and clipped (RGB)."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    a = a + rng.normal(0.0, float(sigma), a.shape)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
