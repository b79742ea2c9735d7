"""Every method through the real entry points: `fakescope train --method ...`, `compare`, `eval`,
captions as a second modality, and the text-leak warning; tiny DINOv2 + tiny sentence encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from fakescope.backbones import parse_spec  # noqa: E402
from fakescope.cli import app, parse_options  # noqa: E402
from fakescope.detector import load_detector  # noqa: E402
from fakescope.training.leakage import TextLeakWarning  # noqa: E402
from fakescope.training import TrainConfig, fit_detector  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # as test_cli: no thread pools spinning against each other

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8)
N = 16  # images per class
SUBJECTS = ["dog", "cat", "car", "red car", "dog photo", "cat picture"]


def smooth(rng):
    yy, xx = np.mgrid[0:40, 0:40] / 39.0
    a, b = rng.random((2, 3))
    return (np.clip(a * xx[..., None] + b * yy[..., None], 0, 1) * 255).astype(np.uint8)


def noisy(rng):
    return np.clip(rng.integers(60, 200, 3) + rng.integers(-60, 61, (40, 40, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_sentence_encoder):
    """data/ with a manifest whose captions are of the same kind for both classes, and
    leaky.csv whose captions give the label away; a tiny DINOv2 in dino/."""
    root = tmp_path_factory.mktemp("methods")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.chdir(root)
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval().save_pretrained(root / "dino")
    rng = np.random.default_rng(0)
    fair, leaky = ["path,label,generator,text"], ["path,label,generator,text"]
    for label, make in (("real", smooth), ("fake", noisy)):
        (root / "img" / label).mkdir(parents=True)
        for i in range(N):
            name = f"img/{label}/{i:02d}.png"
            Image.fromarray(make(rng)).save(root / name)
            gen = "genA" if label == "fake" else ""
            fair.append(f"{name},{label},{gen},a {rng.choice(SUBJECTS)}")
            leaky.append(f"{name},{label},{gen},{'a photo' if label == 'real' else 'highly detailed art painting , 8k render'}")
    (root / "fair.csv").write_text("\n".join(fair) + "\n")
    (root / "leaky.csv").write_text("\n".join(leaky) + "\n")
    yield root, "st:" + tiny_sentence_encoder[0]
    mp.undo()


def train(*args):
    # one feature cache for the module: each backbone reads the 32 images once, not once per train
    res = CliRunner().invoke(app, ["train", "--data", "fair.csv", "--cache", "cache", "--val-fraction", "0.25", *args])
    assert res.exit_code == 0, res.output
    return res


def test_parse_options():
    assert parse_options(["alpha=0.9", "sam=false", "name=x", "blocks=[1,2]"]) == \
        {"alpha": 0.9, "sam": False, "name": "x", "blocks": [1, 2]}
    with pytest.raises(Exception):
        parse_options(["novalue"])


def test_a_method_is_a_head_or_a_registered_recipe(monkeypatch):
    from fakescope.training import methods
    # training/fit.py imports every recipe module: each has registered itself
    assert methods.recipe_methods() == ["code", "fusion", "lowlevel", "natural-traces"]
    assert methods.recipe("linear") is None  # a head on frozen features: fitted by fit_detector itself
    seen = []

    def fake_recipe(cfg, samples, log, fit):
        seen.append((cfg.method, samples, fit))
        return "detector"

    monkeypatch.setitem(methods._RECIPES, "test-recipe", methods.Recipe("test-recipe", fake_recipe))
    cfg = TrainConfig(data=[], method="test-recipe", cache=None)
    assert fit_detector(cfg, ["a sample"]) == "detector"
    assert seen == [("test-recipe", ["a sample"], fit_detector)]  # handed fit_detector for its parts
    with pytest.raises(ValueError, match="unknown method 'no-such-method'"):  # before any image is read
        fit_detector(TrainConfig(data=["no/such/folder"], method="no-such-method", cache=None))


def test_pooled_option_is_strict():
    assert parse_spec("vit-s14-focus?layers=6&pooled=0").pooled is False
    with pytest.raises(ValueError, match="needs layers"):
        parse_spec("vit-s14-focus?pooled=0")
    with pytest.raises(ValueError, match="0 or 1"):
        parse_spec("vit-s14-focus?layers=6&pooled=no")


def test_robust_mlp_from_cli_with_options(work):
    root, _ = work
    train("--backbone", "hf-dinov2:dino", "--method", "robust-mlp", "--out", "rmlp",
          "--set", "epochs=3", "--set", "h1=16", "--set", "h2=8", "--set", "sam=false", "--set", "alpha=0.5")
    det = load_detector(root / "rmlp")
    cfg = json.loads((root / "rmlp" / "detector.json").read_text())["head"]
    assert det.head.method == "robust-mlp" and cfg["alpha"] == 0.5 and cfg["sam"] is False and cfg["hidden"] == [16, 8]
    res = det.predict([str(root / "img/real/00.png"), str(root / "img/fake/00.png")])
    assert all(r.error is None and 0 <= r.score <= 1 for r in res)


def test_multilayer_gets_block_sizes_from_the_spec(work):
    root, _ = work
    train("--backbone", "hf-dinov2:dino?layers=1,2", "--method", "multilayer", "--out", "ml", "--set", "epochs=3")
    det = load_detector(root / "ml")
    assert det.head.config()["blocks"] == [32, 32, 32]
    weights = det.metadata["fit"]["block_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5
    with pytest.raises(ValueError, match="layers"):
        fit_detector(TrainConfig(data=["fair.csv"], backbone="hf-dinov2:dino", method="multilayer", cache=None))


def test_captions_as_second_modality(work):
    root, enc = work
    train("--backbone", "hf-dinov2:dino", "--text", enc, "--modality", "both", "--out", "both")
    det = load_detector(root / "both")
    assert (det.text_encoder, det.modality, det.needs_text) == (enc, "both", True)
    assert det.metadata["text_leak_check"]["leaks"] is False
    img = str(root / "img/fake/01.png")
    missing = det.predict([img])[0]
    assert missing.score is None and missing.error.startswith("missing_text")
    scored = det.predict([img], texts=["a dog"])[0]
    assert scored.error is None and 0 <= scored.score <= 1
    # eval reads the captions from the manifest
    res = CliRunner().invoke(app, ["eval", "--model", "both", "--data", "fair.csv", "--report", "rep-both"])
    assert res.exit_code == 0, res.output
    assert json.loads((root / "rep-both" / "metrics.json").read_text())["n"] == 2 * N


def test_text_only_probe_and_leak_warning(work):
    root, enc = work
    cfg = TrainConfig(data=["leaky.csv"], backbone="hf-dinov2:dino", text_encoder=enc, modality="text",
                      cache=None, val_fraction=0.25)
    with pytest.warns(TextLeakWarning, match="Text alone separates"):
        det = fit_detector(cfg, log=lambda *_: None)
    assert det.metadata["text_leak_check"]["leaks"] is True
    assert det.metadata["text_leak_check"]["text_only_auc"] > 0.9


def test_modality_without_text_encoder_is_an_error(work):
    with pytest.raises(ValueError, match="text encoder"):
        fit_detector(TrainConfig(data=["fair.csv"], backbone="hf-dinov2:dino", modality="both", cache=None))


@pytest.mark.slow
def test_disentangle_reports_semantic_vs_low_level(work):
    root, enc = work
    train("--backbone", "hf-dinov2:dino", "--method", "disentangle", "--text", enc, "--out", "dis",
          "--set", "epochs=3", "--set", "k=8", "--set", "hidden=16")
    det = load_detector(root / "dis")
    assert det.modality == "image"  # captions shape the projections; scoring needs the image only
    assert det.predict([str(root / "img/real/03.png")])[0].error is None
    res = CliRunner().invoke(app, ["eval", "--model", "dis", "--data", "fair.csv", "--report", "rep-dis"])
    assert res.exit_code == 0, res.output
    assert "share of the detection signal" in res.output
    analysis = json.loads((root / "rep-dis" / "metrics.json").read_text())["analysis"]
    assert set(analysis) == {"semantic", "low_level", "both"}
    assert all(0 <= analysis[k]["auc"] <= 1 for k in analysis)


def test_compare_backbones_one_table(work):
    root, _ = work
    res = CliRunner().invoke(app, ["compare", "--backbone", "hf-dinov2:dino", "--backbone",
                                   "hf-dinov2:dino?layers=1&pooled=0", "--data", "fair.csv", "--test", "fair.csv",
                                   "--cache", "cache", "--report", "cmp.json"])
    assert res.exit_code == 0, res.output
    rows = json.loads((root / "cmp.json").read_text())
    assert [r["backbone"] for r in rows] == ["hf-dinov2:dino", "hf-dinov2:dino?layers=1&pooled=0"]
    for r in rows:
        assert r["validation"]["n"] > 0 and r["tests"]["fair.csv"]["n"] == 2 * N
    assert "linear probe per backbone" in res.output


def test_compare_existing_detectors_on_the_same_test(work):
    root, _ = work
    train("--backbone", "hf-dinov2:dino", "--out", "cmp-a")
    train("--backbone", "hf-dinov2:dino?layers=1&pooled=0", "--out", "cmp-b")
    res = CliRunner().invoke(app, ["compare", "--model", "cmp-a", "--model", "cmp-b", "--test", "fair.csv",
                                   "--cache", "cache", "--report", "cmp-models.json"])
    assert res.exit_code == 0, res.output
    rows = json.loads((root / "cmp-models.json").read_text())
    assert len(rows) == 2 and all(r["tests"]["fair.csv"]["n"] == 2 * N for r in rows)
    assert "detectors compared" in res.output
