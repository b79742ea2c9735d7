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
from fakescope.training import TrainConfig  # noqa: E402

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
def test_validate_command_writes_json_markdown_and_per_image_scores(work):
    res = CliRunner().invoke(app, ["validate", "--source", "a=srcA", "--source", "b=srcB", "--photos", "cams=cams",
                                   "--backbone", "hf-dinov2:dino", "--device-folds", "2", "--no-cache",
                                   "--uncertain-band", "per-source", "--report", "val.json", "--scores", "val.npz"])
    assert res.exit_code == 0, res.output
    rep = json.loads((work / "val.json").read_text())
    assert set(rep["leave_one_source_out"]) == {"a", "b"}
    assert rep["device_held_out"]["n"] == 18
    md = (work / "val.md").read_text()
    assert "| a |" in md and "false-positive rate" in md
    arrays = np.load(work / "val.npz")
    folds = {k.split("/")[0] for k in arrays.files}
    assert folds == {"a", "b"} | {f"device-{row['fold']}" for row in rep["device_held_out"]["folds"]}
    for name, row in rep["leave_one_source_out"].items():
        y, s, why = arrays[f"{name}/labels"], arrays[f"{name}/scores"], arrays[f"{name}/reasons"]
        assert len(y) == len(s) == len(why) == row["n"] and all(p.startswith("src") for p in arrays[f"{name}/paths"])
        t = float(arrays[f"{name}/threshold"])
        assert t == pytest.approx(row["threshold"]) and np.mean((s >= t) == (y == 1)) == pytest.approx(row["accuracy"])
        assert (why == "").mean() == pytest.approx(row["selective"]["coverage"])
        # the band was cut from the other training sources' out-of-source scores (b's fold: a and the cameras)
        assert name not in set(arrays[f"{name}/oos_sources"]) and len(arrays[f"{name}/oos_scores"]) > 0
        low, high = arrays[f"{name}/band"]
        assert low <= t <= high
        # its fakes by generator (one each here): found and answered, from the same per-image results
        (gen, g), = row["generators"].items()
        fake, answered = y == 1, why == ""
        assert gen == {"a": "gen0", "b": "gen1"}[name] and g["n"] == fake.sum() == row["n_fake"]
        assert g["auc"] == pytest.approx(row["auc"]) and g["found"] == pytest.approx(row["acc_fake"])
        assert g["answered"] == pytest.approx((fake & answered).sum() / fake.sum())
        if (fake & answered).any():
            assert g["answered_found"] == pytest.approx(np.mean(s[fake & answered] >= t))
    assert (arrays["device-0/labels"] == 0).all()


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
    m = unc.selective_metrics(np.array([0, 1, 1, 0]), [("uncertain", unc.UNFAMILIAR), ("fake", None),
                                                       ("uncertain", unc.NEAR_THRESHOLD), ("real", None)])
    assert m["coverage"] == 0.5 and m["answered_accuracy"] == 1.0 and m["answered_fpr"] == 0.0
    # a referee's veto is an answer, scored by its verdict ("real"), not by the score it overruled
    m = unc.selective_metrics(np.array([0, 1, 0, 1]), [("real", unc.REFEREE_VETO), ("real", unc.REFEREE_VETO),
                                                       ("fake", None), ("uncertain", unc.EXPERTS_DISAGREE)])
    assert m["coverage"] == 0.75 and m["vetoed"] == 0.5 and m["disagree"] == 0.25
    assert m["answered_accuracy"] == pytest.approx(1 / 3) and m["answered_fpr"] == 0.5 and m["answered_tpr"] == 0.0


@pytest.fixture(scope="module")
def trained(work):
    """A detector with an uncertainty rule, trained on srcA and srcB through the CLI (work/det)."""
    res = CliRunner().invoke(app, ["train", "--data", "srcA", "--data", "srcB", "--backbone", "hf-dinov2:dino",
                                   "--no-cache", "--val-fraction", "0.3", "--out", "det"])
    assert res.exit_code == 0, res.output
    return work / "det"


def test_uncertain_verdict_saved_loaded_and_switchable(work, trained):
    det = load_detector(trained)
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
    # train --no-uncertain: no rule in the folder, real or fake always
    res = CliRunner().invoke(app, ["train", "--data", "srcA", "--backbone", "hf-dinov2:dino", "--no-cache",
                                   "--val-fraction", "0.3", "--no-uncertain", "--out", "det-plain"])
    assert res.exit_code == 0, res.output
    assert "uncertainty" not in json.loads((work / "det-plain" / "detector.json").read_text())
    assert load_detector("det-plain").uncertainty is None


def test_scan_writes_uncertain_with_reason_and_can_turn_it_off(work, trained):
    det = load_detector(trained)
    det.uncertainty.max_distance = -1.0  # a folder whose rule calls every image unfamiliar
    det.save(work / "det-strict")
    assert load_detector(work / "det-strict").uncertainty.max_distance == -1.0
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


def test_weighted_quantile_and_source_band_by_hand():
    v = np.array([0.1, 0.4, 0.2, 0.3])
    # unit weights: the lower empirical quantile
    assert unc.weighted_quantile(v, np.ones(4), 0.5) == 0.2 and unc.weighted_quantile(v, np.ones(4), 0.75) == 0.3
    assert unc.weighted_quantile(v, np.array([1, 1, 1, 5]), 0.5) == 0.3  # 0.3 carries 5 of 8
    # two sources of fakes, 8 images and 2: each source weighs one half, so the small source's
    # low scores (0.05, 0.15) are each 1/4 of the mass; 10% of it lies at 0.05
    y = np.array([1] * 10 + [0] * 4)
    s = np.array([0.6, 0.7, 0.8, 0.9, 0.6, 0.7, 0.8, 0.9, 0.05, 0.15, 0.1, 0.2, 0.3, 0.95])
    src = np.array(["a"] * 8 + ["b"] * 2 + ["a", "a", "a", "b"])
    low, high = unc.source_band(y, s, src, threshold=0.5, miss_rate=0.1, confident_fpr=0.2)
    assert low == 0.05
    # reals: a's three (1/6 each) and b's one (1/2): the 80% quantile is b's 0.95
    assert high == 0.95
    # the cuts never cross the threshold
    assert unc.source_band(y, s, src, threshold=0.01, miss_rate=0.1, confident_fpr=0.2)[0] == 0.01
    with pytest.raises(ValueError, match="band"):
        unc.UncertaintyConfig(band="everything")


def test_per_source_band_averages_each_sources_own_cuts():
    """Against numpy's quantile, source by source: one source whose fakes all score low (a source
    the heads cannot read) sets the pooled low cut alone, but only its share of the per-source one."""
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0, 1, 0, 1, 0], [200, 200, 200, 200, 50, 50])
    src = np.repeat(["a", "a", "b", "b", "odd", "odd"], [200, 200, 200, 200, 50, 50])
    s = np.concatenate([rng.uniform(0.6, 1, 200), rng.uniform(0, 0.4, 200), rng.uniform(0.55, 1, 200),
                        rng.uniform(0, 0.45, 200), rng.uniform(0, 0.1, 50), rng.uniform(0.9, 1, 50)])
    t = 0.5
    low, high = unc.source_band(y, s, src, t, miss_rate=0.1, confident_fpr=0.05, per_source=True)
    want_low = np.mean([min(np.quantile(s[(src == n) & (y == 1)], 0.1), t) for n in ("a", "b", "odd")])
    want_high = np.mean([max(np.quantile(s[(src == n) & (y == 0)], 0.95), t) for n in ("a", "b", "odd")])
    assert low == pytest.approx(want_low) and high == pytest.approx(want_high)
    pooled_low, pooled_high = unc.source_band(y, s, src, t, miss_rate=0.1, confident_fpr=0.05)
    assert pooled_low < 0.1 < low < t < high < pooled_high  # the odd source owns both pooled tails
    # a source of reals only sets the high side; the cuts never cross the threshold
    reals_only = unc.source_band(np.zeros(4), np.array([.1, .2, .3, .4]), np.array(["r"] * 4), 0.9, 0.1, 0.1,
                                 per_source=True)
    assert reals_only == (0.9, 0.9)
    assert unc.UncertaintyConfig(band="per-source").from_sources and not unc.UncertaintyConfig().from_sources


def test_out_of_source_scores_come_from_heads_that_never_saw_the_source():
    """Source c's labels are the reverse of a's and b's along one feature: scored by a head fitted
    without it, c comes out inverted (AUC under 0.5) though a head that saw it would not."""
    from sklearn.metrics import roc_auc_score

    from fakescope.training.common import out_of_source_scores
    rng = np.random.default_rng(0)
    n = 60
    y = np.tile([0, 1], 3 * n // 2)
    src = np.repeat(["a", "b", "c"], n)
    X = rng.normal(0, 0.3, (3 * n, 4))
    X[:, 0] += np.where(src == "c", 1 - 2 * y, 2 * y - 1)  # a, b: fakes high on feature 0; c: low
    X[:, 1] += (src == "c") * 3.0                           # c is also somewhere else (a feature of its own)
    clean = np.arange(3 * n) % 3 != 2                       # every third row an "augmented view": never scored
    cfg = TrainConfig(data=[], method="linear")
    labels, scores, names = out_of_source_scores(cfg, None, X, y, np.arange(3 * n).astype(str), src, clean,
                                                 log=lambda *_: None)
    assert len(labels) == clean.sum() and set(names) == {"a", "b", "c"}
    c = names == "c"
    assert roc_auc_score(labels[c], scores[c]) < 0.2
    assert roc_auc_score(labels[~c], scores[~c]) > 0.5
    # one source: nothing to leave out
    assert out_of_source_scores(cfg, None, X[src == "a"], y[src == "a"], np.arange(n).astype(str),
                                src[src == "a"], clean[src == "a"]) is None


def test_accuracy_at_coverage_reads_the_risk_coverage_curve():
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    s = np.array([.99, .95, .01, .05, .40, .60, .45, .55, .9, .1])  # two mistakes: 0.40 and 0.60, the 7th-8th most confident
    curve = unc.risk_coverage(y, s, 0.5, steps=10)
    assert protocols.accuracy_at_coverage(curve, 0.6) == 1.0   # the 6 most confident are all right
    assert protocols.accuracy_at_coverage(curve, 0.7) == pytest.approx(6 / 7)
    assert protocols.accuracy_at_coverage(curve, 1.0) == pytest.approx(0.8)
    assert protocols.accuracy_at_coverage(None) is None


def test_train_reads_the_uncertain_band_off_out_of_source_scores(work):
    res = CliRunner().invoke(app, ["train", "--data", "srcA", "--data", "srcB", "--data", "srcC", "--backbone",
                                   "hf-dinov2:dino", "--no-cache", "--val-fraction", "0.3", "--uncertain-band", "sources",
                                   "--out", "det-band"])
    assert res.exit_code == 0, res.output
    for name in ("srcA", "srcB", "srcC"):
        assert f"out-of-source scores: {name}" in res.output
    rule = load_detector("det-band").uncertainty
    assert rule.band == "sources" and rule.low <= load_detector("det-band").threshold
    each = CliRunner().invoke(app, ["train", "--data", "srcA", "--data", "srcB", "--data", "srcC", "--backbone",
                                    "hf-dinov2:dino", "--no-cache", "--val-fraction", "0.3",
                                    "--uncertain-band", "per-source", "--uncertain-fpr", "0.02", "--out", "det-each"])
    assert each.exit_code == 0, each.output
    each_rule, det = load_detector("det-each").uncertainty, load_detector("det-each")
    assert each_rule.band == "per-source" and each_rule.low <= det.threshold <= each_rule.high
    bad = CliRunner().invoke(app, ["train", "--data", "srcA", "--backbone", "hf-dinov2:dino", "--no-cache",
                                   "--uncertain-band", "everything", "--out", "det-bad"])
    assert bad.exit_code != 0 and "band" in bad.output
    one = CliRunner().invoke(app, ["train", "--data", "srcA", "--backbone", "hf-dinov2:dino", "--no-cache",
                                   "--uncertain-band", "sources", "--out", "det-one"])
    # one source cannot be left out: said before any feature is computed, and no folder is written
    assert one.exit_code != 0 and "two or more sources" in one.output and "train features" not in one.output
    assert not (work / "det-one").exists()


def test_familiarity_on_the_first_columns_ignores_the_rest_and_keeps_the_reference_small():
    rng = np.random.default_rng(4)
    train, val = rng.normal(size=(300, 12)), rng.normal(size=(60, 12))
    train[:, :4], val[:, :4] = np.abs(train[:, :4]) + 1, np.abs(val[:, :4]) + 1  # the columns read: one orthant
    y, s = rng.integers(0, 2, 60), rng.random(60)
    rule = unc.fit_uncertainty(train, val, y, s, threshold=0.5, columns=4)
    assert rule.reference.shape == (300, 4) and rule.config()["columns"] == 4
    far = val.copy()
    far[:, 4:] += 100.0  # far away in the columns not read: still familiar
    assert rule.reasons(far, np.full(60, 0.99), 0.5) == rule.reasons(val, np.full(60, 0.99), 0.5)
    shifted = val.copy()
    shifted[:, :4] *= -1  # the opposite orthant of the columns read: unfamiliar
    assert set(rule.reasons(shifted, np.full(60, 0.99), 0.5)) == {unc.UNFAMILIAR}
    again = unc.UncertaintyRule.from_state(json.loads(json.dumps(rule.config())), rule.state())
    assert again.columns == 4 and again.reasons(far, s, 0.5) == rule.reasons(far, s, 0.5)
    with pytest.raises(ValueError, match="columns"):
        unc.UncertaintyRule.from_state({**rule.config(), "columns": 5}, rule.state())


def test_markdown_lists_generators_only_where_a_source_has_several():
    row = {"n_real": 4, "n_fake": 4, "auc": 0.9, "ap": 0.9, "acc_real": 1.0, "acc_fake": 0.5,
           "generators": {"x": {"n": 2, "auc": 1.0, "found": 1.0, "answered": 0.5, "answered_found": 1.0},
                          "y": {"n": 2, "auc": 0.8, "found": 0.0, "answered": 1.0, "answered_found": 0.0}}}
    md = protocols.markdown_table({"s": row}, None)
    assert "| s | x | 2 | 1.000 | 1.000 | 0.500 | 1.000 |" in md and "| s | y | 2 | 0.800 | 0.000 |" in md
    one = {**row, "generators": {"x": row["generators"]["x"]}}
    assert "| generator |" not in protocols.markdown_table({"s": one}, None)
