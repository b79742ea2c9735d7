"""EER, oracle accuracy, bootstrap CIs, extended summary, and calibration (ECE, Brier, temperature, Platt)."""
from __future__ import annotations

import math

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from fakescope.evaluation.calibration import (  # noqa: E402
    apply_calibration, brier, ece, fit_platt, fit_temperature, logit, reliability_bins, sigmoid,
)
from fakescope.evaluation.metrics import (  # noqa: E402
    accuracy, best_accuracy, bootstrap_ci, eer, roc_auc, summary, threshold_at_fpr,
)

SEEDS = range(6)


def _data(seed: int, ties: bool, n: int | None = None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(20, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.random(n) + 0.3 * y
    s = s / s.max()
    if ties:
        s = np.round(s, 1)
    return y, s


def _eer_brute(y, s):
    """Densely sample every segment of scikit-learn's ROC curve; take the point closest to FPR = FNR."""
    fpr, tpr, _ = sk.roc_curve(y, s)
    w = np.linspace(0, 1, 2001)[:, None]
    f = (fpr[:-1] + w * np.diff(fpr)).ravel()
    fnr = 1 - (tpr[:-1] + w * np.diff(tpr)).ravel()
    i = np.argmin(np.abs(f - fnr))
    return (f[i] + fnr[i]) / 2


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_eer_matches_brute_force(seed, ties):
    y, s = _data(seed, ties)
    assert eer(y, s) == pytest.approx(_eer_brute(y, s), abs=2e-3)


def test_eer_simple_cases():
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 0.0  # separable
    assert eer([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 1.0  # inverted
    assert eer([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # all tied: the diagonal
    assert math.isnan(eer([1, 1], [0.1, 0.2]))


def _best_acc_brute(y, s):
    cands = np.r_[np.unique(s), np.inf]
    return max(float(((s >= t) == y).mean()) for t in cands)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_best_accuracy_matches_brute_force(seed, ties):
    y, s = _data(seed, ties)
    acc, t = best_accuracy(y, s)
    assert acc == pytest.approx(_best_acc_brute(y, s), abs=1e-12)
    assert accuracy(y, s, t) == pytest.approx(acc, abs=1e-12)  # the threshold achieves it


def test_best_accuracy_edge_cases():
    acc, t = best_accuracy([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert acc == 1.0 and t == pytest.approx(0.25)  # midpoint of the gap
    acc, t = best_accuracy([0, 0, 0], [0.1, 0.5, 0.9])  # all real: threshold above every score
    assert acc == 1.0 and t > 0.9
    acc, t = best_accuracy([1, 1], [0.1, 0.5])
    assert acc == 1.0 and t <= 0.1
    assert all(math.isnan(v) for v in best_accuracy([], []))


def _normal_data(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_per_class, int), np.ones(n_per_class, int)]
    return y, rng.normal(size=2 * n_per_class) + y


def test_bootstrap_ci_contains_estimate_and_narrows():
    y, s = _normal_data(60, 0)
    lo, hi = bootstrap_ci(roc_auc, y, s, n=400)
    assert lo < roc_auc(y, s) < hi
    assert bootstrap_ci(roc_auc, y, s, n=400) == (lo, hi)  # seeded: reproducible
    y2, s2 = _normal_data(1500, 0)
    lo2, hi2 = bootstrap_ci(roc_auc, y2, s2, n=400)
    assert lo2 < roc_auc(y2, s2) < hi2
    assert hi2 - lo2 < (hi - lo) / 2  # ~ 1/sqrt(n): 5x narrower expected
    # a wider level gives a wider interval; unstratified resampling also works
    lo9, hi9 = bootstrap_ci(roc_auc, y, s, n=400, alpha=0.5)
    assert lo <= lo9 < hi9 <= hi
    lou, hiu = bootstrap_ci(roc_auc, y, s, n=400, stratified=False)
    assert lou < roc_auc(y, s) < hiu


def test_bootstrap_ci_stratified_keeps_class_counts():
    y, s = _normal_data(30, 1)
    y[:10] = 1  # 20 reals, 40 fakes
    seen = set()

    def n_fake(yb, sb):
        seen.add(int(yb.sum()))
        return float(sb.mean())

    bootstrap_ci(n_fake, y, s, n=50)
    assert seen == {40}


def test_summary_new_keys():
    y, s = _data(3, False, n=400)
    sm = summary(y, s, 0.5)
    for k in ("n", "n_real", "n_fake", "auc", "ap", "accuracy", "acc_real", "acc_fake", "threshold"):
        assert k in sm
    for k in ("tpr_at_1fpr", "tpr_at_5fpr", "eer", "best_accuracy", "best_threshold"):
        assert isinstance(sm[k], float), k
    # direct: highest threshold allowing 5 % of reals through, fraction of fakes above it
    real = np.sort(s[y == 0])[::-1]
    k = int(np.floor(0.05 * len(real)))
    t = np.nextafter(real[k], np.inf)
    assert (real >= t).mean() <= 0.05
    assert sm["tpr_at_5fpr"] == pytest.approx((s[y == 1] >= t).mean())
    assert sm["tpr_at_5fpr"] == pytest.approx((s[y == 1] >= threshold_at_fpr(real, 0.05)).mean())
    fpr, tpr, _ = sk.roc_curve(y, s)
    assert sm["tpr_at_1fpr"] == pytest.approx(tpr[fpr <= 0.01].max())
    assert sm["eer"] == pytest.approx(eer(y, s))
    assert (sm["best_accuracy"], sm["best_threshold"]) == best_accuracy(y, s)
    # one class only: the new keys are NaN (or trivially 1 for the oracle), no exception
    one = summary(np.zeros(5, int), np.linspace(0, 1, 5), 0.5)
    assert math.isnan(one["tpr_at_1fpr"]) and math.isnan(one["tpr_at_5fpr"]) and math.isnan(one["eer"])
    assert one["best_accuracy"] == 1.0


# --- calibration ---------------------------------------------------------------------------------


def _ece_loop(y, p, n_bins):
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        m = (p >= lo) & ((p < hi) if k < n_bins - 1 else (p <= hi))
        if m.any():
            total += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return total


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_and_brier(seed):
    rng = np.random.default_rng(seed)
    n = 500
    p = rng.random(n) ** (1 + seed % 3)
    p[:3] = [0.0, 1.0, 0.5]
    y = (rng.random(n) < p ** 1.5).astype(int)
    for n_bins in (1, 10, 15):
        assert ece(y, p, n_bins) == pytest.approx(_ece_loop(y, p, n_bins), abs=1e-12)
    assert brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), abs=1e-12)
    r = reliability_bins(y, p, 10)
    assert r["counts"].sum() == n and len(r["centers"]) == 10
    assert r["centers"][0] == pytest.approx(0.05)
    m = r["counts"] > 0
    assert np.all((r["mean_predicted"][m] >= (r["centers"] - 0.05)[m] - 1e-12))
    assert np.all(np.isnan(r["mean_predicted"][~m]))


def test_ece_perfect_calibration_is_small():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)
    assert ece(y, p) < 0.02
    assert ece(y, np.clip(p * 0.5 + 0.5, 0, 1)) > 0.2  # over-predicting fakes


def test_logit_clips():
    assert np.all(np.isfinite(logit([0.0, 1.0])))
    np.testing.assert_allclose(sigmoid(logit([0.1, 0.5, 0.9])), [0.1, 0.5, 0.9])


def _nll(y, z):
    p = np.clip(sigmoid(z), 1e-15, 1 - 1e-15)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    y = (rng.random(len(z)) < sigmoid(z)).astype(int)
    over = 3.0 * z  # over-confident by a factor 3
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert _nll(y, over / t) < _nll(y, over)
    assert ece(y, sigmoid(over / t)) < ece(y, sigmoid(over))
    # the optimum really is the minimum of the NLL on a grid
    grid = np.linspace(0.5, 6, 221)
    assert t == pytest.approx(grid[np.argmin([_nll(y, over / g) for g in grid])], abs=0.03)
    # bounded search
    assert fit_temperature(over, y, bounds=(0.1, 2.0)) == pytest.approx(2.0)


def test_fit_calibration_maps_that_apply_calibration_reads():
    from fakescope.evaluation.calibration import calibration_quality, fit_calibration
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 5_000)
    y = (rng.random(len(z)) < sigmoid(z)).astype(int)
    p = sigmoid(3.0 * z)  # over-confident
    temp = fit_calibration(y, p, "temperature")
    assert temp["kind"] == "temperature" and temp["t"] == pytest.approx(3.0, rel=0.1)
    platt = fit_calibration(y, p, "platt")
    assert platt["a"] == pytest.approx(1 / 3, rel=0.1) and abs(platt["b"]) < 0.1
    for cal in (temp, platt):
        assert calibration_quality(y, apply_calibration(p, cal))["nll"] < calibration_quality(y, p)["nll"]
    assert fit_calibration(y, p, "none") is None
    assert calibration_quality(np.zeros(4), np.full(4, 0.3)) is None
    with pytest.raises(ValueError, match="real and fake"):
        fit_calibration(np.ones(4), np.full(4, 0.7), "platt")
    with pytest.raises(ValueError, match="platt, temperature, none"):
        fit_calibration(y, p, "isotonic")


def test_platt_recovers_parameters_and_matches_sklearn():
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.5, 20_000)
    a0, b0 = 1.7, -0.6
    y = (rng.random(len(x)) < sigmoid(a0 * x + b0)).astype(int)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(a0, rel=0.08) and b == pytest.approx(b0, abs=0.08)
    clf = lm.LogisticRegression(C=1e10, tol=1e-10, max_iter=1000).fit(x[:, None], y)
    assert a == pytest.approx(clf.coef_[0, 0], rel=1e-4)
    assert b == pytest.approx(clf.intercept_[0], abs=1e-4)
    # the detector's calibration map (on the logit of a probability) gives scikit-learn's probabilities
    cal = {"kind": "platt", "a": a, "b": b}
    np.testing.assert_allclose(apply_calibration(sigmoid(x[:5]), cal), clf.predict_proba(x[:5, None])[:, 1], atol=1e-5)


def test_platt_separable_stays_finite_with_penalty():
    x = np.array([-2.0, -1.0, 1.0, 2.0])
    y = np.array([0, 0, 1, 1])
    a, b = fit_platt(x, y, l2=1.0)
    assert np.isfinite(a) and a > 0
    p = apply_calibration(sigmoid(x), {"kind": "platt", "a": a, "b": b})
    assert np.all(p[2:] > 0.5) and np.all(p[:2] < 0.5)


def test_risk_coverage_matches_hand_computation():
    from fakescope.uncertainty import risk_coverage
    # threshold 0.5: confidence = |logit(s)|. Order by confidence: 0.99 (fake, right), 0.02 (real, right),
    # 0.9 (real, wrong), 0.2 (fake, wrong), 0.55 (real, wrong)
    y = np.array([1, 0, 0, 1, 0])
    s = np.array([0.99, 0.02, 0.9, 0.2, 0.55])
    rc = risk_coverage(y, s, 0.5, steps=5)
    assert rc["coverage"] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert rc["accuracy"] == pytest.approx([1.0, 1.0, 2 / 3, 0.5, 0.4])
    assert math.isnan(rc["fpr"][0])  # no real answered yet
    assert rc["fpr"][1:] == pytest.approx([0.0, 0.5, 0.5, 2 / 3])
    # the curve is monotone in confidence: the most confident share is answered first
    rng = np.random.default_rng(0)
    y2 = rng.integers(0, 2, 400)
    s2 = np.clip(0.5 + (y2 - 0.5) * rng.uniform(0, 1, 400) + rng.normal(0, 0.15, 400), 0.001, 0.999)
    rc2 = risk_coverage(y2, s2, 0.5)
    assert rc2["accuracy"][0] >= rc2["accuracy"][-1] and rc2["coverage"][-1] == 1.0
