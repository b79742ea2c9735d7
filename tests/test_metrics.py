"""fakescope.evaluation.metrics against scikit-learn, with and without tied scores."""
from __future__ import annotations

import math

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from fakescope.evaluation.metrics import (  # noqa: E402
    accuracy, average_precision, class_accuracy, roc_auc, roc_curve, summary, threshold_at_fpr, tpr_at_fpr,
)

SEEDS = range(8)


def _data(seed: int, ties: bool, n: int | None = None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(20, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    s = rng.random(n) + 0.3 * y  # informative but overlapping
    s = s / s.max()
    if ties:
        s = np.round(s, 1)  # many ties, across and within classes
    return y, s


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_auc_and_ap_match_sklearn(seed, ties):
    y, s = _data(seed, ties)
    if ties:
        assert len(np.unique(s)) < len(s) / 2
    assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    # labels as bool / float arrays and lists are accepted the same way
    assert roc_auc(list(y.astype(bool)), list(s)) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y.astype(float), s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_roc_curve_matches_sklearn(seed, ties):
    y, s = _data(seed, ties)
    fpr, tpr, thr = roc_curve(y, s)
    rf, rt, rthr = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf, atol=1e-12)
    np.testing.assert_allclose(tpr, rt, atol=1e-12)
    assert np.isinf(thr[0]) and np.isinf(rthr[0])
    np.testing.assert_allclose(thr[1:], rthr[1:])
    assert len(thr) == len(np.unique(s)) + 1
    # the trapezoid area under our curve is the AUC
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_class_accuracy_match_sklearn(seed, ties):
    y, s = _data(seed, ties)
    for t in (0.0, 0.3, 0.5, float(np.median(s)), 0.7, 1.01):
        pred = (s >= t).astype(int)
        assert accuracy(y, s, t) == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
        ca = class_accuracy(y, s, t)
        assert ca["real"] == pytest.approx(sk.recall_score(y, pred, pos_label=0, zero_division=0), abs=1e-12)
        assert ca["fake"] == pytest.approx(sk.recall_score(y, pred, pos_label=1, zero_division=0), abs=1e-12)
    sm = summary(y, s, 0.5)
    assert (sm["n"], sm["n_real"], sm["n_fake"]) == (len(y), int((y == 0).sum()), int(y.sum()))
    assert sm["auc"] == pytest.approx(sk.roc_auc_score(y, s))
    assert sm["accuracy"] == pytest.approx(sk.accuracy_score(y, s >= 0.5))


def test_threshold_is_inclusive():
    # score >= threshold means fake: a score equal to the threshold is called fake
    assert accuracy([1, 0], [0.5, 0.4], 0.5) == 1.0
    assert class_accuracy([0, 0], [0.5, 0.5], 0.5)["real"] == 0.0


def test_one_class_only_is_nan():
    s = [0.1, 0.4, 0.8]
    assert math.isnan(roc_auc([0, 0, 0], s))
    assert math.isnan(roc_auc([1, 1, 1], s))
    assert math.isnan(average_precision([0, 0, 0], s))  # no positives: precision-recall undefined
    assert average_precision([1, 1, 1], s) == pytest.approx(sk.average_precision_score([1, 1, 1], s))
    ca = class_accuracy([0, 0, 0], s, 0.5)
    assert ca["real"] == pytest.approx(2 / 3) and math.isnan(ca["fake"])
    sm = summary([0, 0, 0], s, 0.5)
    assert math.isnan(sm["auc"]) and math.isnan(sm["acc_fake"])
    assert math.isnan(accuracy([], [], 0.5))


@pytest.mark.parametrize("fn", [roc_auc, average_precision, roc_curve])
def test_mismatched_lengths_raise(fn):
    with pytest.raises(ValueError, match="labels"):
        fn([0, 1, 0], [0.2, 0.3])


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        accuracy([0, 1], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError):
        class_accuracy([0, 1, 1], [0.1], 0.5)
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        threshold_at_fpr([], 0.05)


def _fpr(real: np.ndarray, t: float) -> float:
    return float((real >= t).sum() / len(real))


TARGETS = (0.0, 0.01, 0.05, 0.1, 0.29, 0.3, 0.5, 0.57, 0.99, 1.0)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_at_fpr_is_the_smallest_admissible(seed, ties):
    rng = np.random.default_rng(100 + seed)
    n = [100, 7, 20, 333, 50, 1, 2, 1000][seed]
    real = rng.random(n)
    if ties:
        real = np.round(real, 1)
    for target in TARGETS + tuple(rng.random(5)):
        t = threshold_at_fpr(real, target)
        assert _fpr(real, t) <= target, (n, target, t)
        below = real[real < t]
        if len(below):  # the next real score down already flags too many reals
            assert _fpr(real, below.max()) > target, (n, target, t)
        else:
            assert t <= real.min()
        # the midpoint margin flags the same reals, from further away
        m = threshold_at_fpr(real, target, margin="midpoint")
        assert m >= t and ((real >= m) == (real >= t)).all(), (n, target, t, m)


def test_threshold_at_fpr_small_cases():
    real = np.array([0.9, 0.1, 0.5, 0.3])
    assert threshold_at_fpr(real, 0.0) > 0.9 and threshold_at_fpr(real, 0.0) == pytest.approx(0.9)
    t = threshold_at_fpr(real, 0.25)  # one of four reals may be flagged: the 0.9 one
    assert 0.5 < t <= 0.9 and _fpr(real, t) == 0.25
    assert threshold_at_fpr(real, 1.0) == 0.1  # every real may be flagged


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_tpr_at_fpr_consistent(seed, ties):
    y, s = _data(seed, ties)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    for target in TARGETS + (0.25,):
        got = tpr_at_fpr(y, s, target)
        t = threshold_at_fpr(s[y == 0], target)
        assert got == pytest.approx(float((s[y == 1] >= t).mean()))
        # best TPR on scikit-learn's ROC curve among operating points within the FPR budget
        assert got == pytest.approx(tpr[fpr <= target].max(), abs=1e-12), target


def test_threshold_at_fpr_holds_for_float32_scores_compared_as_detectors_compare_them():
    # detectors compare float32 scores with a Python float (NumPy casts it to float32): a threshold one
    # float64 step above a real's score rounds back onto it and would flag that real as well
    rng = np.random.default_rng(5)
    real = rng.random(500).astype(np.float32)
    for target in (0.0, 0.01, 0.05, 0.1, 0.3):
        t = threshold_at_fpr(real, target)
        assert (real >= t).mean() <= target and (real.astype(np.float64) >= t).mean() <= target
        assert (real >= np.float32(t)).sum() == (real > np.sort(real)[::-1][int(target * 500)]).sum()
