"""Training augmentations (fakescope.training.views): each a small pure function of (image, rng)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fakescope.training import views as V


def photo(w=64, h=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8))


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("scale", [(0.4, 1.0), (0.05, 0.4)])
def test_crop_box_covers_the_requested_area_fraction(scale):
    r = rng()
    fracs = []
    for _ in range(300):
        l, t, rr, b = V.crop_box(200, 150, r, scale)
        assert 0 <= l < rr <= 200 and 0 <= t < b <= 150
        fracs.append((rr - l) * (b - t) / (200 * 150))
    fracs = np.array(fracs)
    assert fracs.min() >= scale[0] * 0.9 and fracs.max() <= scale[1] * 1.05 + 1e-9
    assert np.ptp(fracs) > 0.5 * (scale[1] - scale[0])   # really random over the range


def test_crop_box_falls_back_to_a_centred_crop():
    # a 1000x10 strip cannot hold a 3/4..4/3 box of 40%+ of its area: centred fallback within the ratio
    l, t, r, b = V.crop_box(1000, 10, rng(), (0.4, 1.0))
    assert (r - l) / (b - t) <= 4 / 3 + 0.1 and l == (1000 - (r - l)) // 2


def test_random_resized_crop_size_and_determinism():
    img = photo()
    a = V.random_resized_crop(img, rng(3), (0.05, 0.4), 32)
    b = V.random_resized_crop(img, rng(3), (0.05, 0.4), 32)
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    c = V.random_resized_crop(img, rng(3), (0.4, 1.0), None)   # None: the crop, not resized
    assert c.size[0] * c.size[1] >= 0.35 * 64 * 48


def test_random_crop_keeps_native_pixels():
    img = photo(80, 60)
    c = V.random_crop(img, rng(1), 24)
    big, small = np.asarray(img), np.asarray(c)
    hits = [(y, x) for y in range(60 - 23) for x in range(80 - 23) if np.array_equal(big[y:y + 24, x:x + 24], small)]
    assert c.size == (24, 24) and len(hits) == 1         # an exact sub-array: no resampling
    assert V.random_crop(photo(16, 12), rng(), 24).size == (24, 24)   # too small: upscaled first


def test_hflip_mirrors():
    img = photo()
    assert np.array_equal(np.asarray(V.hflip(img)), np.asarray(img)[:, ::-1])


def test_jpeg_loses_more_at_lower_quality():
    img = photo(seed=2)
    x = np.asarray(img, float)
    err = {q: np.abs(np.asarray(V.jpeg(img, q), float) - x).mean() for q in (30, 95)}
    assert V.jpeg(img, 95).size == img.size and 0 < err[95] < err[30]


def test_blur_smooths():
    img = photo(seed=4)
    rough = np.abs(np.diff(np.asarray(img, float), axis=1)).mean()
    assert np.abs(np.diff(np.asarray(V.blur(img, 1.5), float), axis=1)).mean() < 0.6 * rough


def test_resize_by_size_and_factor():
    img = photo(64, 48)
    assert V.resize(img, 20).size == (20, 20)
    assert V.resize(img, factor=0.5).size == (32, 24)
    with pytest.raises(ValueError):
        V.resize(img)


def test_colour_jitter_ranges():
    img = photo(seed=5)
    assert np.array_equal(np.asarray(V.colour_jitter(img, rng(), 0, 0, 0)), np.asarray(img))   # strength 0: identity
    x = np.asarray(img, float)
    for s in range(20):
        y = np.asarray(V.colour_jitter(img, rng(s), brightness=0.3, contrast=0, saturation=0), float)
        ratio = y.mean() / x.mean()
        assert 0.68 <= ratio <= 1.32                        # brightness factor in [0.7, 1.3] (clipping aside)
    grey = np.asarray(V.colour_jitter(img, np.random.default_rng(0), 0, 0, saturation=1.0), float)
    assert grey.shape == x.shape


def test_make_view_deterministic_and_sized():
    img = photo(120, 90)
    cfg = V.ViewConfig(out_size=32, scale=(0.05, 0.4), p_jpeg=1.0, p_blur=1.0, p_jitter=1.0, p_resize=1.0)
    a, b = V.make_view(img, rng(7), cfg), V.make_view(img, rng(7), cfg)
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(V.make_view(img, rng(8), cfg)))
    pre = V.make_view(img, rng(1), V.ViewConfig(out_size=16, pre_crop=40))
    assert pre.size == (16, 16)
    assert V.GLOBAL_VIEW.scale == (0.4, 1.0) and V.LOCAL_VIEW.scale == (0.05, 0.4)
    assert V.GLOBAL_VIEW.signature() != V.LOCAL_VIEW.signature()


def test_to_array_normalises_to_chw():
    img = Image.fromarray(np.full((4, 5, 3), 255, np.uint8))
    a = V.to_array(img)
    assert a.shape == (3, 4, 5) and a.dtype == np.float32 and np.allclose(a, 1.0)
    assert np.allclose(V.to_array(Image.fromarray(np.zeros((2, 2, 3), np.uint8))), -1.0)
