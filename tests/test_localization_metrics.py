"""fakescope.evaluation.localization against scikit-learn and brute force, on small random maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from fakescope.evaluation.localization import (  # noqa: E402
    PixelMetrics, best_f1, f1, iou, map_scores, pixel_ap, pixel_auc, pixel_scores,
)

SEEDS = range(6)


def _pair(seed: int, shape=(24, 32), ties: bool = False):
    """A rectangular manipulated region and an informative, noisy map in [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[y0:y0 + rng.integers(3, h // 2), x0:x0 + rng.integers(3, w // 2)] = True
    pred = 1.0 / (1.0 + np.exp(-(1.5 * (2 * mask - 1) + rng.normal(0, 1.5, shape))))
    if ties:
        pred = np.round(pred * 255) / 255  # 8-bit map: many tied pixels
    return pred, mask


def _brute_best_f1(pred, mask) -> float:
    p, r, _ = sk.precision_recall_curve(mask.ravel(), pred.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(f.max())


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_per_image_metrics_match_sklearn(seed, ties):
    pred, mask = _pair(seed, ties=ties)
    y = mask.ravel().astype(int)
    for t in (0.0, 0.3, 0.5, 0.7, 1.0, 1.01):
        b = (pred.ravel() >= t).astype(int)
        assert iou(pred, mask, t) == pytest.approx(sk.jaccard_score(y, b, zero_division=1.0), abs=1e-12)
        assert f1(pred, mask, t) == pytest.approx(sk.f1_score(y, b, zero_division=1.0), abs=1e-12)
    assert iou(pred, mask) == iou(pred, mask, 0.5)
    assert pixel_ap(pred, mask) == pytest.approx(sk.average_precision_score(y, pred.ravel()), abs=1e-12)
    assert pixel_auc(pred, mask) == pytest.approx(sk.roc_auc_score(y, pred.ravel()), abs=1e-12)
    assert best_f1(pred, mask) == pytest.approx(_brute_best_f1(pred, mask), abs=1e-12)
    assert best_f1(pred, mask) >= f1(pred, mask) - 1e-12
    # masks as 0/1 ints or floats are the same as bool masks
    assert pixel_auc(pred, mask.astype(np.uint8)) == pixel_auc(pred, mask)
    assert f1(pred.astype(np.float32), mask.astype(float)) == pytest.approx(f1(pred, mask))
    yy, ss = pixel_scores(pred, mask)
    assert yy.shape == ss.shape == (pred.size,) and yy.dtype.kind == "i"


def test_perfect_prediction_is_one_everywhere():
    _, mask = _pair(0)
    pred = mask.astype(float)
    for fn in (iou, f1, best_f1, pixel_ap, pixel_auc):
        assert fn(pred, mask) == 1.0, fn.__name__
    pm = PixelMetrics()
    for s in range(4):
        _, m = _pair(s)
        pm.update(m.astype(float), m, is_fake=True)
        pm.update(np.zeros(m.shape), None, is_fake=False)
    r = pm.compute()
    for key in ("iou", "f1", "best_f1", "pixel_ap", "pixel_auc", "image_auc_mean", "image_auc_max"):
        assert r[key] == pytest.approx(1.0, abs=1e-12), key
    assert r["pixel_auc_max_error"] == 0.0 and r["real_pixel_fpr"] == 0.0


def test_empty_and_one_class_conventions():
    z = np.zeros((5, 6))
    empty = np.zeros((5, 6), dtype=bool)
    assert math.isnan(pixel_auc(np.random.default_rng(0).random((5, 6)), empty))  # all-negative mask
    assert math.isnan(pixel_auc(z, ~empty))  # all-positive mask
    assert math.isnan(pixel_ap(z, empty))  # no positive pixel: precision-recall undefined
    assert pixel_ap(z, ~empty) == 1.0
    assert iou(z, empty) == 1.0 and f1(z, empty) == 1.0 and best_f1(z, empty) == 1.0  # nothing vs nothing
    hot = z.copy()
    hot[0, 0] = 0.9
    assert iou(hot, empty) == 0.0 and f1(hot, empty) == 0.0
    assert iou(z, ~empty) == 0.0 and f1(z, ~empty) == 0.0  # missed everything


def test_bad_inputs_raise():
    pred, mask = _pair(0)
    for fn in (iou, f1, best_f1, pixel_ap, pixel_auc, pixel_scores):
        with pytest.raises(ValueError, match="shape"):
            fn(pred, mask[:, :-1])
    with pytest.raises(ValueError, match="shape"):
        PixelMetrics().update(pred, mask.T, is_fake=True)
    with pytest.raises(ValueError, match="0 and 1"):
        iou(pred, mask.astype(np.uint8) * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        f1(pred * 3 - 1, mask)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auc(np.full(mask.shape, np.nan), mask)
    pm = PixelMetrics()
    with pytest.raises(ValueError, match="real image"):
        pm.update(pred, mask, is_fake=False)
    with pytest.raises(ValueError, match="needs a mask"):
        pm.update(pred, None, is_fake=True)
    with pytest.raises(ValueError, match="2-D"):
        map_scores(pred.ravel())
    assert pm.compute()["n_images"] == 0  # failed updates leave no trace


def test_map_scores_pooled_max():
    rng = np.random.default_rng(3)
    p = rng.random((7, 9))
    brute = max(p[i:i + 3, j:j + 3].mean() for i in range(5) for j in range(7))
    sc = map_scores(p)
    assert sc["mean"] == pytest.approx(p.mean()) and sc["max"] == pytest.approx(brute, abs=1e-12)
    assert map_scores(p, pool=1)["max"] == pytest.approx(p.max())
    spike = np.zeros((8, 8))
    spike[4, 4] = 1.0
    assert map_scores(spike)["max"] == pytest.approx(1 / 9)  # a lone hot pixel does not decide the image
    assert map_scores(np.full((2, 1), 0.4))["max"] == pytest.approx(0.4)  # smaller than the window


def _stream(n_fake=10, n_real=6, ties=False, seed=0):
    rng = np.random.default_rng(seed)
    fakes = [_pair(100 + seed * 50 + i, shape=(20 + i, 28), ties=ties) for i in range(n_fake)]
    reals = [np.clip(rng.beta(2, 5, (20, 28)) + 0.1 * rng.random(), 0, 1) for _ in range(n_real)]
    return fakes, reals


@pytest.mark.parametrize("ties", [False, True])
def test_pixel_metrics_accumulator(ties):
    fakes, reals = _stream(ties=ties)
    pm = PixelMetrics()
    for (p, m), r in zip(fakes, reals + [None] * len(fakes)):
        pm.update(p, m, is_fake=True)
        if r is not None:
            pm.update(r, None if len(pm.labels) % 2 else np.zeros(r.shape, bool), is_fake=False)
    res = pm.compute()
    assert (res["n_images"], res["n_fake"], res["n_real"], res["n_fake_empty_mask"]) == (16, 10, 6, 0)

    y = np.concatenate([m.ravel() for _, m in fakes]).astype(int)
    s = np.concatenate([p.ravel() for p, _ in fakes])
    assert (res["n_pixels_pos"], res["n_pixels_neg"]) == (y.sum(), (1 - y).sum())
    exact_ap, exact_auc = sk.average_precision_score(y, s), sk.roc_auc_score(y, s)
    assert res["pixel_ap"] == pytest.approx(exact_ap, abs=1e-2)
    assert res["pixel_auc"] == pytest.approx(exact_auc, abs=1e-2)
    assert abs(res["pixel_auc"] - exact_auc) <= res["pixel_auc_max_error"] + 1e-12
    if ties:  # 8-bit maps: every level has its own bin, binned == exact
        assert res["pixel_ap"] == pytest.approx(exact_ap, abs=1e-12)
        assert res["pixel_auc"] == pytest.approx(exact_auc, abs=1e-12)

    # per-image means equal the means of the exact per-image functions
    assert res["iou"] == pytest.approx(np.mean([iou(p, m) for p, m in fakes]), abs=1e-12)
    assert res["f1"] == pytest.approx(np.mean([f1(p, m) for p, m in fakes]), abs=1e-12)
    exact_best = [best_f1(p, m) for p, m in fakes]
    assert res["best_f1"] <= np.mean(exact_best) + 1e-12  # grid thresholds are a subset of all thresholds
    assert res["best_f1"] == pytest.approx(np.mean(exact_best), abs=5e-3)
    for i, ((p, m), b) in enumerate(zip(fakes, exact_best)):
        assert pm.best_f1s[i] == pytest.approx(b, abs=1e-2)

    # image-level AUC of map-derived scores, fakes first then reals (update order interleaved)
    labels = np.array(pm.labels)
    maps = []
    it_f, it_r = iter(fakes), iter(reals)
    for lab in labels:
        maps.append(next(it_f)[0] if lab else next(it_r))
    for key in ("mean", "max"):
        sc = [map_scores(mp)[key] for mp in maps]
        assert res[f"image_auc_{key}"] == pytest.approx(sk.roc_auc_score(labels, sc), abs=1e-12)
    flagged = sum(int((r >= 0.5).sum()) for r in reals)
    assert res["real_pixel_fpr"] == pytest.approx(flagged / sum(r.size for r in reals))


@pytest.mark.parametrize("ties", [False, True])
def test_best_fixed_threshold_is_the_mean_f1_maximiser(ties):
    """One threshold for every image: the curve equals the mean of the exact per-image f1() at each
    grid threshold, and the chosen threshold maximises it."""
    fakes, reals = _stream(ties=ties, seed=2)
    pm = PixelMetrics(n_bins=101)
    for pm_args in [(p, m, True) for p, m in fakes] + [(r, None, False) for r in reals]:
        pm.update(*pm_args[:2], is_fake=pm_args[2])
    ts, curve = pm.fixed_threshold_f1()
    for k in range(0, 101, 5):  # the curve is exact at grid thresholds
        assert curve[k] == pytest.approx(np.mean([f1(p, m, threshold=ts[k]) for p, m in fakes]), abs=1e-12)
    res = pm.compute()
    brute = max(range(101), key=lambda k: (np.mean([f1(p, m, threshold=ts[k]) for p, m in fakes]), -k))
    assert res["best_fixed_threshold"] == pytest.approx(ts[brute])
    assert res["f1_best_fixed"] == pytest.approx(curve.max())
    assert res["f1"] <= res["f1_best_fixed"] + 1e-12 <= res["best_f1"] + 2e-12  # fixed 0.5 <= best fixed <= per-image oracle
    assert math.isnan(PixelMetrics().compute()["best_fixed_threshold"])

    # with a cap on the share of real pixels flagged: the best F1 among the thresholds within it
    _, fpr = pm.real_pixel_fpr_curve()
    for k in range(0, 101, 10):
        assert fpr[k] == pytest.approx(sum(int((r >= ts[k]).sum()) for r in reals) / sum(r.size for r in reals))
    cap = float(np.median(fpr))
    t, f, r = pm.best_fixed_threshold(max_real_fpr=cap)
    allowed = [k for k in range(101) if fpr[k] <= cap]
    k_best = max(allowed, key=lambda k: (curve[k], -k))
    assert (t, f, r) == (pytest.approx(ts[k_best]), pytest.approx(curve[k_best]), pytest.approx(fpr[k_best]))
    assert r <= cap and t >= res["best_fixed_threshold"] - 1e-12
    assert all(math.isnan(v) for v in pm.best_fixed_threshold(max_real_fpr=-1.0))


def test_pixel_metrics_memory_is_constant():
    fakes, reals = _stream(n_fake=4, n_real=2)
    pm = PixelMetrics(n_bins=1001)
    arrays = {k: v.shape for k, v in vars(pm).items() if isinstance(v, np.ndarray)}
    assert arrays == {"thresholds": (1001,), "hist_pos": (1001,), "hist_neg": (1001,), "f1_by_threshold": (1001,),
                      "hist_real": (1001,)}
    for _ in range(25):
        for p, m in fakes:
            pm.update(p, m, is_fake=True)
        for r in reals:
            pm.update(r, None, is_fake=False)
    assert {k: v.shape for k, v in vars(pm).items() if isinstance(v, np.ndarray)} == arrays
    # only per-image scalars grow: never a pixel array
    for v in vars(pm).values():
        if isinstance(v, list):
            assert len(v) <= 150 and all(np.isscalar(x) for x in v)
    assert pm.compute()["n_images"] == 150


def test_pixel_metrics_edge_cases():
    r = PixelMetrics().compute()
    assert r["n_images"] == 0 and all(math.isnan(r[k]) for k in ("iou", "pixel_ap", "pixel_auc", "image_auc_max"))
    pm = PixelMetrics()
    pm.update(np.full((6, 6), 0.2), np.zeros((6, 6), bool), is_fake=True)  # fake with an empty mask
    p, m = _pair(1)
    pm.update(p, m, is_fake=True)
    res = pm.compute()
    assert res["n_fake_empty_mask"] == 1 and res["n_fake"] == 2
    assert res["iou"] == pytest.approx(iou(p, m))  # excluded from the per-image means
    assert math.isnan(res["image_auc_mean"])  # no real image seen
    assert res["n_pixels_neg"] == 36 + int((~m).sum())  # but its pixels are counted
