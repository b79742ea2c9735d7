"""Leave-one-source-out, device-held-out camera photos, and the "uncertain" verdict, through
`fit_detector` and `fakescope validate` on a tiny DINOv2 and images the test makes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from fakescope import uncertainty as unc  # noqa: E402
from fakescope.cli import app  # noqa: E402
from fakescope.detector import load_detector  # noqa: E402
from fakescope.evaluation import protocols  # noqa: E402
from fakescope.train import TrainConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # as test_cli: no thread pools spinning against each other

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8)


def smooth(rng, tint):
    yy, xx = np.mgrid[0:40, 0:40] / 39.0
    a, b = rng.random((2, 3))
    img = np.clip(a * xx[..., None] + b * yy[..., None], 0, 1) * 200 + tint
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(rng, tint):
    return np.clip(rng.integers(60, 160, 3) + tint + rng.integers(-60, 61, (40, 40, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Three labelled sources (smooth reals, noisy fakes, each with its own tint) and a folder of
    "camera photos" from six devices; a tiny DINOv2 in dino/."""
    root = tmp_path_factory.mktemp("protocols")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.chdir(root)
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval().save_pretrained(root / "dino")
    rng = np.random.default_rng(0)
    for k, name in enumerate(("srcA", "srcB", "srcC")):
        for label, make in (("real", smooth), ("fake", noisy)):
            d = root / name / label / ("" if label == "real" else f"gen{k}")
            d.mkdir(parents=True)
            for i in range(12):
                Image.fromarray(make(rng, 20 * k)).save(d / f"{name}-{label}-{i:02d}.png")
    for dev in range(6):
        d = root / "cams" / "real" / f"Maker_Model-{dev}"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(smooth(rng, 10)).save(d / f"dev{dev}-{i}.png")
    yield root
    mp.undo()


def test_device_of_reads_the_folder_under_real_and_folds_spellings_together():
    s = protocols.Sample(path="x/photos.tar::real/Apple_iPhone-XR/IMG_1.JPG")
    t = protocols.Sample(path="/p/real/Apple iPhone XR/a.jpg")
    assert protocols.device_of(s) == protocols.device_of(t) == "appleiphonexr"
    assert protocols.device_of(protocols.Sample(path="loose.jpg")) == "unknown"
    assert protocols.parse_named("wild=a/b.tar") == ("wild", "a/b.tar")
    assert protocols.parse_named("../shared/data/wild/train.tar") == ("wild", "../shared/data/wild/train.tar")


@pytest.mark.slow  # several refits of a tiny model
def test_leave_one_source_out_never_trains_on_the_held_out_source(work, monkeypatch):
    seen = []
    real_fit = protocols.fit_detector

    def recording_fit(cfg, samples, log=print):
        seen.append({s.source for s in samples})
        return real_fit(cfg, samples, log=log)

    monkeypatch.setattr(protocols, "fit_detector", recording_fit)
    cfg = TrainConfig(data=[], backbone="hf-dinov2:dino", cache=None, val_fraction=0.25)
    sources = protocols.load_named(["srcA", "srcB", "srcC"], None)
    cams = protocols.load_named(["cams=cams"], None)
    res = protocols.leave_one_source_out(cfg, sources, always_train=cams, log=lambda *_: None)
    assert list(res) == ["srcA", "srcB", "srcC"]
    assert seen == [{"srcB", "srcC", "cams"}, {"srcA", "srcC", "cams"}, {"srcA", "srcB", "cams"}]
    for r in res.values():
        assert (r["n"], r["n_real"], r["n_fake"]) == (24, 12, 12)
        assert r["auc"] > 0.6   # smooth vs noisy carries across tints (random tiny features: well above chance, not perfect)
        assert r["fpr"] == pytest.approx(1 - r["acc_real"])
        assert 0 <= r["selective"]["coverage"] <= 1

    seen.clear()
    dev = protocols.device_held_out_fpr(cfg, cams, sources, folds=3, log=lambda *_: None)
    assert dev["n"] == 18 and dev["devices"] == 6
    assert sum(r["n"] for r in dev["folds"]) == 18
    # each fold trains on the labelled sources and on the other devices' photos only
    assert all(s == {"srcA", "srcB", "srcC", "cams"} for s in seen)
    fold_devices = [{protocols.device_of(s) for s in cams[0].samples
                     if protocols.device_fold(protocols.device_of(s), 3, 0) == r["fold"]} for r in dev["folds"]]
    assert sum(len(d) for d in fold_devices) == 6   # every device in exactly one test fold
    assert dev["fpr"] == pytest.approx(sum(r["fpr"] * r["n"] for r in dev["folds"]) / 18)


def test_leave_one_generator_out_trains_without_g_and_tests_held_out_images(work, monkeypatch, tmp_path):
    seen = []
    real_fit = protocols.fit_detector

    def recording_fit(cfg, samples, log=print):
        seen.append((cfg.calibrate_on, {s.generator for s in samples if s.label == 1}))
        return real_fit(cfg, samples, log=log)

    monkeypatch.setattr(protocols, "fit_detector", recording_fit)
    # srcA's fakes are gen0; srcB holds gen1 and, here, a second generator
    samples = protocols.load_sources(["srcA", "srcB"], None)
    for s in samples:
        if s.generator == "gen1" and s.path.endswith(("00.png", "01.png", "02.png", "03.png", "04.png", "05.png")):
            s.generator = "gen9"
    cfg = TrainConfig(data=["srcA", "srcB"], backbone="hf-dinov2:dino", cache=str(tmp_path / "cache"), val_fraction=0.5,
                      uncertainty=None)  # the refits read each image's features from the cache
    res = protocols.leave_one_generator_out(cfg, samples, test_source="srcB", log=lambda *_: None)
    assert list(res["per_generator"]) == ["gen1", "gen9"]   # srcB's generators only
    assert seen == [(["srcB"], {"gen0", "gen9"}), (["srcB"], {"gen0", "gen1"})]
    held = [s for s, h in zip(samples, protocols.split_samples(samples, 0.5, 0)) if h and s.source == "srcB"]
    for g, row in res["per_generator"].items():
        assert row["n_real"] == sum(s.label == 0 for s in held) > 0
        assert row["n_fake"] == sum(s.generator == g for s in held) > 0
    assert res["mean_auc"] == pytest.approx(np.mean([r["auc"] for r in res["per_generator"].values()]))
    with pytest.raises(ValueError, match="two named generators"):
        protocols.leave_one_generator_out(cfg, samples, test_source="srcA")


@pytest.mark.slow  # several refits of a tiny model
def test_validate_command_writes_json_and_markdown(work):
    res = CliRunner().invoke(app, ["validate", "--source", "a=srcA", "--source", "b=srcB", "--photos", "cams=cams",
                                   "--backbone", "hf-dinov2:dino", "--device-folds", "2", "--no-cache",
                                   "--report", "val.json"])
    assert res.exit_code == 0, res.output
    rep = json.loads((work / "val.json").read_text())
    assert set(rep["leave_one_source_out"]) == {"a", "b"}
    assert rep["device_held_out"]["n"] == 18
    md = (work / "val.md").read_text()
    assert "| a |" in md and "false-positive rate" in md


def test_uncertainty_rule_flags_unfamiliar_and_near_threshold():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (200, 8)) + np.array([5, 0, 0, 0, 0, 0, 0, 0])
    val = rng.normal(0, 1, (60, 8)) + np.array([5, 0, 0, 0, 0, 0, 0, 0])
    y = np.arange(60) % 2
    scores = np.where(y == 1, rng.uniform(0.4, 1.0, 60), rng.uniform(0.0, 0.6, 60))
    rule = unc.fit_uncertainty(train, val, y, scores, threshold=0.7,
                               cfg=unc.UncertaintyConfig(k=5, quantile=0.95, miss_rate=0.2))
    assert 0.4 <= rule.low < 0.7 and rule.high is None
    far = -np.ones((1, 8)) * 5                      # opposite direction: unlike every training row
    near = val[:1]
    reasons = rule.reasons(np.vstack([far, near, near, near]), np.array([0.9, 0.95, rule.low + 1e-3, 0.01]), 0.7)
    assert reasons == [unc.UNFAMILIAR, None, unc.NEAR_THRESHOLD, None]
    # about `quantile` of the validation images themselves are familiar
    d = unc.knn_distance(val, rule.reference, 5)
    assert 0.9 <= (d <= rule.max_distance).mean() <= 1.0
    m = unc.selective_metrics(np.array([0, 1, 1, 0]), np.array([0.9, 0.95, 0.6, 0.01]), 0.7,
                              [unc.UNFAMILIAR, None, unc.NEAR_THRESHOLD, None])
    assert m["coverage"] == 0.5 and m["answered_accuracy"] == 1.0 and m["answered_fpr"] == 0.0


def test_uncertain_verdict_saved_loaded_and_switchable(work):
    res = CliRunner().invoke(app, ["train", "--data", "srcA", "--data", "srcB", "--backbone", "hf-dinov2:dino",
                                   "--no-cache", "--val-fraction", "0.3", "--out", "det"])
    assert res.exit_code == 0, res.output
    det = load_detector("det")
    assert det.uncertainty is not None and det.uncertainty.reference.shape[1] == 32
    meta = json.loads((work / "det" / "detector.json").read_text())
    assert meta["uncertainty"]["k"] == det.uncertainty.k
    # the images it was trained on (not its validation split) are familiar: none is "unfamiliar"
    from fakescope.data.sources import load_labelled
    from fakescope.data.splits import split_samples
    real = [x for x in load_labelled("srcA") if x.label == 0]
    train_imgs = [np.asarray(Image.open(x.path)) for x, held in zip(real, split_samples(real, 0.3, 0)) if not held]
    assert len(train_imgs) >= 6
    assert all(x.reason != unc.UNFAMILIAR for x in det.predict(train_imgs))
    # the saved rule decides the verdict: with its distance cut below every distance, each image is
    # "uncertain" with the reason, its score unchanged; with abstain off, real or fake again
    grey = np.full((40, 40, 3), 128, np.uint8)
    scores = [x.score for x in det.predict([grey, *train_imgs[:2]])]
    det.uncertainty.max_distance = -1.0
    r = det.predict([grey, *train_imgs[:2]])
    assert [x.label for x in r] == ["uncertain"] * 3 and {x.reason for x in r} == {unc.UNFAMILIAR}
    assert [x.score for x in r] == pytest.approx(scores)
    det.abstain = False
    assert [x.label for x in det.predict([grey])] in (["real"], ["fake"])
    det.abstain = True
    det.save(work / "det-strict")  # for the scan test: a folder whose rule calls every image unfamiliar
    assert load_detector(work / "det-strict").uncertainty.max_distance == -1.0
    # train --no-uncertain: no rule in the folder, real or fake always
    res = CliRunner().invoke(app, ["train", "--data", "srcA", "--backbone", "hf-dinov2:dino", "--no-cache",
                                   "--val-fraction", "0.3", "--no-uncertain", "--out", "det-plain"])
    assert res.exit_code == 0, res.output
    assert "uncertainty" not in json.loads((work / "det-plain" / "detector.json").read_text())
    assert load_detector("det-plain").uncertainty is None


def test_scan_writes_uncertain_with_reason_and_can_turn_it_off(work):
    if not (work / "det-strict" / "detector.json").exists():
        pytest.skip("needs the detector saved by test_uncertain_verdict_saved_loaded_and_switchable")
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(work / "grey.png")
    for flag, out in (("--uncertain", "on.jsonl"), ("--no-uncertain", "off.jsonl")):
        res = CliRunner().invoke(app, ["scan", "grey.png", "--model", "det-strict", "--out", out, flag])
        assert res.exit_code == 0, res.output
    on = json.loads((work / "on.jsonl").read_text().splitlines()[-1])
    off = json.loads((work / "off.jsonl").read_text().splitlines()[-1])
    assert on["label"] == "uncertain" and on["reason"] == unc.UNFAMILIAR
    assert off["label"] in ("real", "fake") and off["reason"] is None
    assert on["score"] == pytest.approx(off["score"])


def test_confident_fake_cut_widens_the_band_to_the_stated_fpr():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (100, 4))
    y = np.arange(100) % 2
    scores = np.where(y == 1, rng.uniform(0.3, 1.0, 100), rng.uniform(0.0, 0.8, 100))
    reals = np.sort(scores[y == 0])
    rule = unc.fit_uncertainty(x, x, y, scores, threshold=0.6,
                               cfg=unc.UncertaintyConfig(quantile=1.0, miss_rate=0.1, confident_fpr=0.02))
    # at most 2% of the held-out reals (1 of 50) at or above `high`, and `high` never under the threshold
    assert (reals >= rule.high).sum() <= 1 and (reals >= np.nextafter(rule.high, -1)).sum() >= 1
    assert rule.high >= 0.6
    r = rule.reasons(x[:3], np.array([0.65, rule.high, rule.low - 1e-6]), 0.6)
    assert r == [unc.NEAR_THRESHOLD, None, None]
    again = unc.UncertaintyRule.from_state(rule.config(), rule.state())
    assert again.high == pytest.approx(rule.high) and again.confident_fpr == 0.02


def test_a_held_out_image_does_not_come_back_through_its_twin():
    from fakescope.data.samples import Sample
    from fakescope.evaluation.protocols import without_families_of
    test = [Sample(path="wild.tar::real/imagenet/a.jpg", label=0), Sample(path="x/b.png", label=0, group="fam-b")]
    train = [Sample(path="aligned.tar::real/wild/1.png", label=0, group="a.jpg"),     # twin of a test photo
             Sample(path="aligned.tar::fake/ae/wild-1.png", label=1, group="a.jpg"),  # its re-synthesis
             Sample(path="y/c.png", label=1, group="fam-b"),                          # an edit of a test photo
             Sample(path="z/a.jpg", label=0),                                         # same name, no family: kept
             Sample(path="aligned.tar::real/wild/2.png", label=0, group="other.jpg")]
    kept = without_families_of(train, test)
    assert [s.path for s in kept] == ["z/a.jpg", "aligned.tar::real/wild/2.png"]
