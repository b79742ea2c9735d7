"""End to end through the CLI: `fakescope train --method code|natural-traces` on a tiny image folder,
then load + scan; the encoder as a `trained:<dir>` backbone; resume; a moved model folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import app  # noqa: E402
from fakescope.detector import load_detector  # noqa: E402

TINY = ["--set", "image_size=16", "--set", "patch=4", "--set", "dim=32", "--set", "depth=1", "--set", "heads=2",
        "--set", "epochs=2", "--set", "batch_size=16", "--set", "workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """real/: smooth gradients; fake/genA, fake/genB: noisy textures (40 px PNG)."""
    root = tmp_path_factory.mktemp("embed") / "data"
    rng = np.random.default_rng(0)
    for label, gens in (("real", [""]), ("fake", ["genA", "genB"])):
        for g in gens:
            d = root / label / g
            d.mkdir(parents=True)
            for i in range(10):
                if label == "real":
                    yy, xx = np.mgrid[0:40, 0:40] / 39.0
                    a, b = rng.random((2, 3))
                    arr = np.clip(a * xx[..., None] + b * yy[..., None], 0, 1) * 255
                else:
                    arr = np.clip(rng.integers(60, 200, 3) + rng.integers(-60, 61, (40, 40, 3)), 0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{label}{g}{i:02d}.png")
    return root


def train(args):
    return CliRunner().invoke(app, ["train", *args], catch_exceptions=False)


def test_code_trains_saves_and_scans(data, tmp_path, one_thread):
    out = tmp_path / "code"
    r = train(["--data", str(data), "--method", "code", "--out", str(out), "--no-cache", *TINY])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} >= {"detector.json", "head.safetensors", "encoder", "training"}
    meta = json.loads((out / "detector.json").read_text())
    assert meta["method"] == "code" and meta["head"]["head_method"] == "knn"
    assert meta["backbone"]["kind"] == "pixels" and meta["backbone"]["input_size"] == 16
    lines = (out / "training" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "loss_fake_anchored" in json.loads(lines[0])
    # the model folder can be moved: everything it needs is inside it
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    res = tmp_path / "scan.jsonl"
    r = CliRunner().invoke(app, ["scan", str(data), "--model", str(moved), "--out", str(res), "--no-table"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in res.read_text().splitlines()]
    assert len(recs) == 30 and all(0 <= x["score"] <= 1 for x in recs)
    fake = np.mean([x["score"] for x in recs if "/fake/" in x["path"]])
    real = np.mean([x["score"] for x in recs if "/real/" in x["path"]])
    assert fake > real                                   # trivially separable toy data
    # the encoder alone is a backbone: a frozen-feature head on the learned embedding
    lin = tmp_path / "lin"
    r = train(["--data", str(data), "--backbone", f"trained:{moved / 'encoder'}", "--method", "linear",
               "--out", str(lin), "--no-cache"])
    assert r.exit_code == 0, r.output
    assert load_detector(lin).predict(str(next((data / "real").iterdir())))[0].score is not None


def test_natural_traces_resume_and_other_heads(data, tmp_path, one_thread):
    out = tmp_path / "nt"
    args = ["--data", str(data), "--method", "natural-traces", "--out", str(out), "--no-cache", *TINY,
            "--set", "prototypes=2"]
    r = train(args)
    assert r.exit_code == 0, r.output
    det = load_detector(out)
    assert det.head.method == "natural-traces" and det.head.head.method == "distance"
    # scored by distance to the 2 learned traces (not a refitted real centre), with the supervised term on
    assert det.head.head.config()["centres_from"] == "given" and det.head.head.config()["prototypes"] == 2
    assert det.metadata["fit"]["options"]["supervised_weight"] == 1.0
    assert (out / "training" / "stage1" / "metrics.jsonl").exists()
    assert len((out / "training" / "stage2" / "metrics.jsonl").read_text().splitlines()) == 2
    scores = [r.score for r in det.predict([str(p) for p in sorted((data / "real").iterdir())[:3]])]
    assert all(s is not None for s in scores)
    # re-running the same command resumes from the finished checkpoints: no epoch is trained again
    r = train(args)
    assert r.exit_code == 0 and "resuming" in r.output and "epoch 1/" not in r.output
    # other heads on the same trained encoder, without training again
    for head in ("ocsvm", "logistic", "knn"):
        o2 = tmp_path / f"nt-{head}"
        r = train(["--data", str(data), "--method", "natural-traces", "--out", str(o2), "--no-cache",
                   "--set", f"encoder=trained:{out / 'encoder'}", "--set", f"head={head}"])
        assert r.exit_code == 0, r.output
        assert load_detector(o2).head.head.method == {"logistic": "linear"}.get(head, head)


def test_bad_options_are_usage_errors(data, tmp_path):
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--method", "code", "--out", str(tmp_path / "x"),
                                 "--set", "epoch=3"])
    assert r.exit_code == 2 and "unknown option" in r.output
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--method", "code", "--out", str(tmp_path / "x"),
                                 "--set", "head=svm"])
    assert r.exit_code == 2


@pytest.mark.slow  # trains an adapter encoder
def test_adapter_on_a_frozen_backbone(data, tmp_path, one_thread):
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path / "adapter"
    r = train(["--data", str(data), "--method", "code", "--out", str(out), "--cache", str(tmp_path / "cache"),
               "--set", "encoder=adapter:effnet-lite0", "--set", "epochs=2", "--set", "batch_size=16",
               "--set", "head=ocsvm", "--set", "local_views=1"])
    assert r.exit_code == 0, r.output
    det = load_detector(out)
    assert det.spec.name == "effnet-lite0" and det.head.encoder.kind == "adapter"
    enc = json.loads((out / "encoder" / "encoder.json").read_text())
    assert enc["input"]["name"] == "effnet-lite0"      # the adapter records the frozen backbone it sits on
