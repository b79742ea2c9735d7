"""Training views: small augmentations on PIL/numpy, each a pure function of (image, rng).

Every function takes its randomness from an explicit `numpy.random.Generator`, so a view is
a function of (image, seed): the engine seeds one generator per (run seed, epoch, image) and
the same view comes out whichever process builds it. No torchvision.

    random_resized_crop   a crop of `scale` of the image's area (aspect ratio 3/4..4/3), resized
    random_crop           a crop at native resolution (no resampling: pixel traces survive)
    hflip, jpeg, blur, resize, colour_jitter   one deterministic operation each
    make_view             a ViewConfig's pipeline: crop -> flip -> colour -> blur -> resize -> JPEG
    native_view           a NativeViewConfig's pipeline for a low-level expert: native crop -> flip /
                          rotate -> blur -> resize -> JPEG, never resampled unless the resize step is drawn
    to_array              PIL -> normalised float32 CHW

CoDE's two scales: global views keep 40-100% of the area, local views 5-40% (both resized to
the encoder's input), so the encoder must recognise a generator's traces from a small piece.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..imageops import gaussian_blur as blur  # the view steps jpeg and blur are imageops' (one implementation)
from ..imageops import jpeg_roundtrip as jpeg
from ..imageops import rescale

Rng = np.random.Generator


def _size(out_size: int | tuple[int, int]) -> tuple[int, int]:
    return (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)


def crop_box(width: int, height: int, rng: Rng, scale: tuple[float, float],
             ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop covering `scale` of the area with aspect ratio in
    `ratio` (log-uniform); after `attempts` misses, the largest centred crop within the ratio range."""
    area = width * height
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(lo, hi))
        w, h = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    r = width / height
    if r < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif r > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def random_resized_crop(img: Image.Image, rng: Rng, scale: tuple[float, float] = (0.4, 1.0),
                        out_size: int | tuple[int, int] | None = 32,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """A crop of `scale` of the image's area resized (bicubic) to `out_size`; out_size None keeps
    the crop's own size (a later step, e.g. a backbone's preprocessing, sizes it)."""
    box = crop_box(img.width, img.height, rng, scale, ratio)
    if out_size is None:
        return img.crop(box)
    return img.resize(_size(out_size), Image.BICUBIC, box=box)


def random_crop(img: Image.Image, rng: Rng, size: int) -> Image.Image:
    """A `size` x `size` crop at native resolution; an image smaller than that is first upscaled
    (bicubic) so its shorter side is `size`."""
    if min(img.size) < size:
        f = size / min(img.size)
        img = img.resize((max(size, round(img.width * f)), max(size, round(img.height * f))), Image.BICUBIC)
    left, top = int(rng.integers(0, img.width - size + 1)), int(rng.integers(0, img.height - size + 1))
    return img.crop((left, top, left + size, top + size))


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def resize(img: Image.Image, size: int | tuple[int, int] | None = None, factor: float | None = None) -> Image.Image:
    """Resize (bicubic) to `size`, or by `factor` (at least 1 px per side)."""
    if size is None:
        if factor is None:
            raise ValueError("resize needs size or factor")
        return rescale(img, factor)
    return img.resize(_size(size), Image.BICUBIC)


def colour_jitter(img: Image.Image, rng: Rng, brightness: float = 0.3, contrast: float = 0.3,
                  saturation: float = 0.3) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor drawn from [1-s, 1+s], in a
    random order (as torchvision's ColorJitter, without hue), on a float copy, clipped to 0..255."""
    x = np.asarray(img.convert("RGB"), dtype=np.float32)
    ops = [("b", brightness), ("c", contrast), ("s", saturation)]
    for k in rng.permutation(3):
        name, s = ops[int(k)]
        if s <= 0:
            continue
        f = rng.uniform(max(0.0, 1 - s), 1 + s)
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        if name == "b":
            x = x * f
        elif name == "c":
            x = (x - grey.mean()) * f + grey.mean()
        else:
            x = (x - grey[..., None]) * f + grey[..., None]
        x = np.clip(x, 0, 255)
    return Image.fromarray(np.round(x).astype(np.uint8))


@dataclass(frozen=True)
class ViewConfig:
    """One kind of view. Probabilities are per view; ranges are sampled uniformly."""
    out_size: int | None = 32                   # side of the square view; None: crop only (a backbone resizes later)
    scale: tuple[float, float] = (0.4, 1.0)     # area fraction of the random resized crop (global 0.4-1, local 0.05-0.4)
    pre_crop: int | None = None                 # first a native-resolution crop of this side (large photos: keep traces)
    p_flip: float = 0.5
    p_jitter: float = 0.5
    jitter: float = 0.3                         # brightness / contrast / saturation strength
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    p_resize: float = 0.2                       # down- then up-scale by a factor (resampling traces)
    resize_factor: tuple[float, float] = (0.5, 1.0)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)

    def signature(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


GLOBAL_VIEW = ViewConfig(scale=(0.4, 1.0))
LOCAL_VIEW = ViewConfig(scale=(0.05, 0.4))


def make_view(img: Image.Image, rng: Rng, cfg: ViewConfig = GLOBAL_VIEW) -> Image.Image:
    """crop (optionally after a native pre-crop) -> flip -> colour jitter -> blur -> down/up resize -> JPEG.
    Both classes go through the same pipeline, so none of these operations can become the signal."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    if cfg.pre_crop:
        img = random_crop(img, rng, cfg.pre_crop)
    img = random_resized_crop(img, rng, cfg.scale, cfg.out_size)
    if rng.random() < cfg.p_flip:
        img = hflip(img)
    if rng.random() < cfg.p_jitter:
        img = colour_jitter(img, rng, cfg.jitter, cfg.jitter, cfg.jitter)
    if rng.random() < cfg.p_blur:
        img = blur(img, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_resize:
        size = img.size
        img = resize(resize(img, factor=rng.uniform(*cfg.resize_factor)), size)
    if rng.random() < cfg.p_jpeg:
        img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return img


@dataclass(frozen=True)
class NativeViewConfig:
    """Views for a low-level expert: pixels at native resolution, so the generator's traces survive,
    with the post-processing a published image meets (blur, resizing, JPEG q30-100) drawn for both
    classes alike: none of it can become the real/fake signal."""
    size: int = 64                              # crop side
    p_flip: float = 0.5
    p_rotate: float = 0.5                       # a quarter turn (1-3 of them)
    p_blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    p_resize: float = 0.2                       # the crop is taken from the image resized by this factor
    resize_factor: tuple[float, float] = (0.5, 1.5)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)

    def signature(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


def native_view(img: Image.Image, rng: Rng, cfg: NativeViewConfig = NativeViewConfig()) -> Image.Image:
    """(optional resize of the whole region) -> native crop -> flip / rotate -> blur -> JPEG."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    if rng.random() < cfg.p_resize:
        img = resize(img, factor=rng.uniform(*cfg.resize_factor))
    img = random_crop(img, rng, cfg.size)
    if rng.random() < cfg.p_flip:
        img = hflip(img)
    if rng.random() < cfg.p_rotate:
        img = img.transpose((Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)[int(rng.integers(3))])
    if rng.random() < cfg.p_blur:
        img = blur(img, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_jpeg:
        img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return img


def to_array(img: Image.Image, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
             std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """RGB PIL -> float32 (3, H, W), (pixel/255 - mean) / std: the `pixels` backbone's preprocessing."""
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


__all__ = ["GLOBAL_VIEW", "LOCAL_VIEW", "NativeViewConfig", "ViewConfig", "blur", "colour_jitter", "crop_box", "hflip", "jpeg",
           "make_view", "native_view", "random_crop", "random_resized_crop", "resize", "to_array"]
