"""Detector: save/load as JSON + safetensors (no pickle), predict on every input kind, errors per item."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from safetensors.numpy import load_file  # noqa: E402

from fakescope.backbones import load_backbone, parse_spec, preprocess  # noqa: E402
from fakescope.detector import FORMAT, Detector, load_detector  # noqa: E402
from fakescope.heads.linear import LinearProbe  # noqa: E402
from fakescope.images import decode_image, sha256_hex  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8)


pytestmark = pytest.mark.usefixtures("offline", "one_thread")


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval()
    d = tmp_path_factory.mktemp("dino")
    model.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    return str(d)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        arr = rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)
        if i % 2:
            arr = np.sort(arr, axis=1)  # smoother half
        p = d / f"im{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def detector(dino_dir, images):
    spec = parse_spec("hf-dinov2:" + dino_dir)
    assert spec.dim == 32 and spec.input_size == 32
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, spec.dim)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(40) > 0).astype(int)
    head = LinearProbe(seed=0)
    head.fit(X, y)
    det = Detector(spec=spec, head=head, threshold=0.5, id="tiny", version="7", metadata={"note": "test"})
    scores = [r.score for r in det.predict([str(p) for p in images])]
    det.threshold = float(np.median(scores))  # a threshold with images on both sides of it
    return det


def test_save_is_json_and_safetensors_only(tmp_path, detector):
    d = detector.save(tmp_path / "model")
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "detector.json", "head.safetensors"]
    for p in d.iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # pickle protocol 2+ magic
    meta = json.loads((d / "detector.json").read_text())
    assert meta["format"] == FORMAT and meta["id"] == "tiny" and meta["version"] == "7"
    assert meta["method"] == "linear" and meta["head"]["dim"] == 32
    assert meta["backbone"]["name"] == detector.spec.name and meta["backbone"]["dim"] == 32
    assert meta["threshold"] == detector.threshold and meta["metadata"] == {"note": "test"}
    state = load_file(str(d / "head.safetensors"))
    assert set(state) == {"mean", "std", "weight", "bias"}
    np.testing.assert_array_equal(state["weight"], detector.head.weight)
    np.testing.assert_array_equal(state["mean"], detector.head.mean)
    assert state["bias"][0] == pytest.approx(detector.head.bias)


def test_load_roundtrip_and_input_kinds(tmp_path, detector, images):
    loaded = load_detector(detector.save(tmp_path / "model"))
    assert loaded.spec == detector.spec and loaded.spec.signature() == detector.spec.signature()
    assert loaded.threshold == detector.threshold and loaded.name == "tiny@7"

    p = images[0]
    raw = p.read_bytes()
    pil = Image.open(p)
    arr = np.asarray(Image.open(p).convert("RGB"))
    res = loaded.predict([p, str(p), pil, arr, raw])
    assert [r.error for r in res] == [None] * 5
    scores = np.array([r.score for r in res])
    np.testing.assert_allclose(scores, scores[0], rtol=0, atol=1e-6)
    # single inputs are accepted without a list
    assert loaded.predict(raw)[0].score == pytest.approx(scores[0], abs=1e-6)
    assert loaded.predict(arr)[0].score == pytest.approx(scores[0], abs=1e-6)
    # path and bytes hash the same file content
    assert res[0].sha256 == res[4].sha256 == sha256_hex(raw)
    assert res[0].path == str(p) and res[4].path.startswith("<bytes")

    # the score is the head on the backbone's embedding of the preprocessed image, computed directly
    bb = load_backbone(loaded.spec)
    x = preprocess(decode_image(p), loaded.spec)[None]
    direct = loaded.head.predict(bb.forward(x).pooled)[0]
    assert scores[0] == pytest.approx(float(direct), abs=1e-6)
    # the original (unsaved) detector agrees with the reloaded one
    assert detector.predict(p)[0].score == pytest.approx(scores[0], abs=1e-6)


def test_labels_follow_threshold(detector, images):
    res = detector.predict([str(p) for p in images])
    assert {r.label for r in res} == {"real", "fake"}
    for r in res:
        assert 0.0 <= r.score <= 1.0
        assert r.label == ("fake" if r.score >= detector.threshold else "real")
        assert r.threshold == detector.threshold and r.model == "tiny" and r.model_version == "7"


def test_broken_item_in_batch(tmp_path, detector, images):
    broken = tmp_path / "broken.png"
    broken.write_bytes(images[0].read_bytes()[:60])  # header only
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    inputs = [str(images[1]), str(broken), str(images[2]), str(empty), str(tmp_path / "missing.png")]
    res = detector.predict(inputs)
    assert [r.path for r in res] == inputs
    good = detector.predict([str(images[1]), str(images[2])])
    for i, g in ((0, good[0]), (2, good[1])):
        assert res[i].error is None and res[i].score == pytest.approx(g.score, abs=1e-6)
    codes = [res[i].error.split(":")[0] for i in (1, 3, 4)]
    assert codes == ["truncated", "empty", "unreadable"]
    for i in (1, 3, 4):
        assert res[i].score is None and res[i].label is None
        assert res[i].to_dict()["error"] == res[i].error
    assert res[1].sha256 is None and res[3].sha256 is None

    bad = detector.predict([str(broken)])
    assert len(bad) == 1 and bad[0].error and bad[0].score is None


def test_bad_array_and_type(detector):
    with pytest.raises(ValueError):
        detector.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError):
        detector.predict([12345])


def test_load_errors(tmp_path, detector):
    with pytest.raises(FileNotFoundError, match="detector.json"):
        load_detector(tmp_path / "nothing-here")
    d = detector.save(tmp_path / "model")
    meta = json.loads((d / "detector.json").read_text())
    meta["format"] = "someone-else/9"
    (d / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unsupported detector format 'someone-else/9'"):
        load_detector(d)
    meta["format"] = FORMAT
    meta["method"] = "no-such-head"
    (d / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no-such-head"):
        load_detector(d)


def test_an_image_the_backbone_fails_on_is_that_images_error(detector, images, picky_backbone):
    from dataclasses import replace

    # the real backbone, except that it cannot take image 2
    det = replace(detector, _backbone=picky_backbone(detector.backbone,
                                                     preprocess(decode_image(images[2]), detector.spec)))
    want = detector.predict([str(p) for p in images])
    got = det.predict([str(p) for p in images])
    assert got[2].score is None and got[2].label is None
    assert got[2].error == "forward_failed: RuntimeError: cannot take this input"
    for i in (0, 1, 3, 4, 5):  # the rest of its batch scored as without the failure
        assert got[i].error is None and got[i].score == pytest.approx(want[i].score, abs=1e-6)
    alone = det.predict(str(images[2]))[0]  # a batch of one: a grey control image tells it from a broken model
    assert alone.error == got[2].error
