"""Localisation through the command line: make-edits -> localizer train -> localizer eval ->
scan --localize --masks, on photo-like images and a tiny random DINOv2."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import EXIT_SOME_FAILED, app  # noqa: E402
from fakescope.data.pairs import load_pairs, split_pairs  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=64, patch_size=8)


def photo(rng, w, h):
    """Smooth gradients + mild texture: something the edit mechanisms can visibly change."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / (9 + 5 * c) + yy / (13 + 3 * c) + rng.random() * 6) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("loccli")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.chdir(root)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval().save_pretrained(root / "dino")
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for i in range(14):
        Image.fromarray(photo(rng, 96 + 8 * (i % 3), 80)).save(root / "photos" / f"p{i:02d}.jpg", quality=95)
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    yield root
    torch.set_num_threads(n)
    mp.undo()


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_make_edits_then_train_eval_and_scan(work):
    root = work
    res = run("make-edits", "--from", "photos", "--out", "edits", "--per-image", "2")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((root / "edits" / "table.csv").open()))
    assert len(rows) == 28  # 14 good photos x 2; the broken one is reported, not fatal
    assert "broken.jpg" in res.output
    for r in rows[:4]:
        mask = np.asarray(Image.open(root / "edits" / r["mask"]))
        fake = Image.open(root / "edits" / r["fake"])
        assert mask.shape == (fake.height, fake.width) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    pairs = load_pairs(root / "edits")
    train, val = split_pairs(pairs, 0.25)
    assert {p.group for p in train}.isdisjoint({p.group for p in val})  # split by photo, never by image

    res = run("localizer", "train", "--data", "edits", "--out", "loc", "--epochs", "4", "--width", "32",
              "--backbone", "hf-dinov2:dino?resize=resize&patch_layer=2", "--val-fraction", "0.25")
    assert res.exit_code == 0, res.output
    meta = json.loads((root / "loc" / "localizer.json").read_text())
    vm = meta["metadata"]["validation_metrics"]
    assert vm["n_fake"] > 0 and 0 <= vm["pixel_auc"] <= 1 and 0 <= vm["iou"] <= 1

    res = run("localizer", "eval", "--model", "loc", "--data", "edits", "--report", "rep")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "rep" / "metrics.json").read_text())
    assert m["n_fake"] == 28 and m["n_real"] == len([r for r in rows if r["real"]])
    grid = Image.open(root / "rep" / "examples.png")
    assert grid.height >= 8 * 160 and "examples.png" in (root / "rep" / "report.html").read_text()

    # calibrate the mask threshold on the held-out pairs; eval then cuts the maps there
    res = run("localizer", "calibrate", "--model", "loc", "--data", "edits", "--val-fraction", "0.25", "--out", "loc-cal")
    assert res.exit_code == 0, res.output
    cal = json.loads((root / "loc-cal" / "localizer.json").read_text())
    info = cal["metadata"]["threshold_calibration"]
    assert 0 <= cal["threshold"] <= 1
    assert info["previous_threshold"] == 0.5 and info["f1_at_threshold"] >= info["f1_at_previous"]
    res = run("localizer", "eval", "--model", "loc-cal", "--data", "edits", "--val-fraction", "0.25", "--report", "rep-cal")
    assert res.exit_code == 0, res.output
    m_cal = json.loads((root / "rep-cal" / "metrics.json").read_text())
    assert m_cal["threshold"] == cal["threshold"]
    assert m_cal["f1"] == pytest.approx(info["f1_at_threshold"], abs=1e-9)  # the chosen threshold's F1, exactly
    assert m_cal["pixel_auc"] == pytest.approx(vm["pixel_auc"], abs=1e-6)   # same maps, only the cut moved
    # the same with a cap on the share of real pixels flagged
    res = run("localizer", "calibrate", "--model", "loc", "--data", "edits", "--val-fraction", "0.25",
              "--max-real-fpr", "0.01", "--out", "loc-cal-fpr")
    assert res.exit_code == 0, res.output
    capped = json.loads((root / "loc-cal-fpr" / "localizer.json").read_text())
    assert capped["metadata"]["threshold_calibration"]["real_pixel_fpr_at_threshold"] <= 0.01
    assert capped["threshold"] >= cal["threshold"]
    res = run("localizer", "calibrate", "--model", "loc", "--data", "edits", "--max-real-fpr", "-1", "--out", "x")
    assert res.exit_code == 2 and "nothing saved" in res.output and not (root / "x").exists()

    # scan with the shipped detector's stand-in (a tiny detector) and this localiser
    res = run("train", "--data", "edits", "--backbone", "hf-dinov2:dino", "--no-cache", "--out", "det")
    assert res.exit_code == 0, res.output
    out = root / "scan.jsonl"
    res = run("scan", "photos", "--model", "det", "--localize", "--localizer", "loc", "--masks", "maps",
              "--out", out)
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    recs = {r["path"].split("/")[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["broken.jpg"]["error"] and "map_mean" not in recs["broken.jpg"]
    good = recs["p00.jpg"]
    assert 0 <= good["map_mean"] <= 1 and 0 <= good["map_max"] <= 1
    mask = Image.open(root / "maps" / "p00_mask.png")
    overlay = Image.open(root / "maps" / "p00_overlay.png")
    src = Image.open(root / "photos" / "p00.jpg")
    assert mask.mode == "L" and mask.size == src.size and overlay.size == src.size
    assert len(list((root / "maps").glob("*_mask.png"))) == 14

    # resuming the same scan skips everything already localised
    res = run("scan", "photos", "--model", "det", "--localize", "--localizer", "loc", "--out", out)
    assert "14 of 15 already scored" in res.output
    assert len(out.read_text().splitlines()) == 15


def test_pairs_from_a_manifest_with_mask_paths(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(photo(rng, 40, 30)).save(tmp_path / "r.png")
    Image.fromarray(photo(rng, 40, 30)).save(tmp_path / "f.png")
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 10:30] = 255
    Image.fromarray(m).save(tmp_path / "f_mask.png")
    (tmp_path / "pairs.csv").write_text("path,label,mask,group\nr.png,real,,p1\nf.png,fake,f_mask.png,p1\n")
    pairs = load_pairs(tmp_path / "pairs.csv")
    assert [p.label for p in pairs] == [0, 1] and pairs[0].mask is None
    assert pairs[1].mask.sum() == 10 * 20 and {p.group for p in pairs} == {"p1"}
    (tmp_path / "bad.csv").write_text("path,label,mask\nf.png,fake,\n")
    with pytest.raises(ValueError, match="no mask"):
        load_pairs(tmp_path / "bad.csv")
