"""Contrastive losses vs loop references; multi-layer probe and semantic/low-level disentanglement heads."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.numpy import load_file, save_file  # noqa: E402

from fakescope.evaluation.metrics import roc_auc  # noqa: E402
from fakescope.heads import head_from_state, make_head, methods  # noqa: E402
from fakescope.heads.contrastive import info_nce, supcon_loss  # noqa: E402
from fakescope.heads.disentangle import DisentangleProbe  # noqa: E402
from fakescope.heads.multilayer import MultiLayerProbe  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(rows):
    return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def ref_supcon(z, labels, t):
    z = _unit(z)
    n, losses = len(z), []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue  # documented: anchors without a positive are skipped
        denom = sum(math.exp(_dot(z[i], z[a]) / t) for a in range(n) if a != i)
        losses.append(-sum(math.log(math.exp(_dot(z[i], z[p]) / t) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def ref_info_nce(a, b, t):
    a, b = _unit(a), _unit(b)
    n = len(a)
    row = col = 0.0
    for i in range(n):
        row -= math.log(math.exp(_dot(a[i], b[i]) / t) / sum(math.exp(_dot(a[i], b[j]) / t) for j in range(n)))
        col -= math.log(math.exp(_dot(a[i], b[i]) / t) / sum(math.exp(_dot(a[j], b[i]) / t) for j in range(n)))
    return 0.5 * (row + col) / n


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_loop_references(seed, temperature):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 9)), int(rng.integers(2, 6))
    z, w = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    labels = rng.integers(0, 3, n)
    assert float(supcon_loss(_t(z), torch.tensor(labels), temperature)) == \
        pytest.approx(ref_supcon(z.tolist(), labels.tolist(), temperature), rel=1e-9, abs=1e-12)
    assert float(info_nce(_t(z), _t(w), temperature)) == \
        pytest.approx(ref_info_nce(z.tolist(), w.tolist(), temperature), rel=1e-9)
    # tensor (learnable) temperature, scaling invariance (inputs are normalised), gradients flow
    zt = _t(z * 3.0).requires_grad_(True)
    tt = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    loss = info_nce(zt, _t(w), tt) + supcon_loss(zt, torch.tensor(labels), tt)
    loss.backward()
    assert torch.isfinite(zt.grad).all() and torch.isfinite(tt.grad)
    assert loss.item() == pytest.approx(ref_info_nce(z.tolist(), w.tolist(), temperature)
                                        + ref_supcon(z.tolist(), labels.tolist(), temperature), rel=1e-9)


def test_supcon_edge_cases():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 4))
    # all labels equal: every other sample is a positive; bounded below by log(N - 1)
    same = torch.zeros(6, dtype=torch.long)
    got = float(supcon_loss(_t(z), same, 0.1))
    assert got == pytest.approx(ref_supcon(z.tolist(), [0] * 6, 0.1), rel=1e-9)
    assert got >= math.log(5) - 1e-9
    assert float(supcon_loss(_t(np.ones((6, 4))), same, 0.1)) == pytest.approx(math.log(5), rel=1e-9)
    # sample 5 is alone in its class: it is skipped as an anchor but stays a negative for the others
    labels = [0, 0, 1, 1, 1, 2]
    got = float(supcon_loss(_t(z), torch.tensor(labels), 0.1))
    assert got == pytest.approx(ref_supcon(z.tolist(), labels, 0.1), rel=1e-9)
    without_5 = float(supcon_loss(_t(z[:5]), torch.tensor(labels[:5]), 0.1))
    assert got != pytest.approx(without_5)  # it still shapes the denominators
    # no anchor has a positive (all distinct, or a single sample): 0, differentiable
    for zz, ll in ((z, list(range(6))), (z[:1], [0])):
        zt = _t(zz).requires_grad_(True)
        loss = supcon_loss(zt, torch.tensor(ll), 0.1)
        loss.backward()
        assert loss.item() == 0.0 and float(zt.grad.abs().sum()) == 0.0
    assert float(info_nce(_t(z[:1]), _t(z[:1]), 0.07)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ multilayer

BLOCKS = [24, 16, 24, 16]
SIGNAL = np.random.default_rng(7).normal(size=BLOCKS[2])


def _layers(n, seed):
    """Four blocks of noise; only block index 2 shifts with the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, sum(BLOCKS)))
    s = sum(BLOCKS[:2])
    X[:, s:s + BLOCKS[2]] += 1.5 * np.outer(2 * y - 1, SIGNAL / np.linalg.norm(SIGNAL))
    return X.astype(np.float32), y


def _round_trip(head, tmp_path):
    """Through JSON and safetensors, the way a Detector saves a head."""
    save_file({k: np.ascontiguousarray(v) for k, v in head.state().items()}, str(tmp_path / "head.safetensors"))
    config = json.loads(json.dumps(head.config()))
    return head_from_state(head.method, config, load_file(str(tmp_path / "head.safetensors")))


def test_multilayer_learns_and_weights_the_signal_block(tmp_path):
    assert {"multilayer", "disentangle"} <= set(methods())
    X, y = _layers(600, 0)
    head = make_head("multilayer", blocks=BLOCKS, proj_dim=32, seed=0)
    info = head.fit(X, y, groups=np.arange(600) // 2)  # two views per image
    assert info["heldout_auc"] > 0.9
    w = info["block_weights"]
    assert len(w) == 4 and sum(w) == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(w)) == 2
    assert head.config()["block_weights"] == w
    Xt, yt = _layers(400, 1)
    scores = head.predict(Xt)
    assert roc_auc(yt, scores) > 0.9 and ((scores >= 0) & (scores <= 1)).all()

    again = _round_trip(head, tmp_path)
    assert isinstance(again, MultiLayerProbe)
    np.testing.assert_array_equal(again.predict(Xt), scores)
    one = again.predict(Xt[:1])
    assert one.shape == (1,) and one[0] == pytest.approx(scores[0], abs=1e-6)


def test_multilayer_needs_blocks():
    X, y = _layers(40, 2)
    with pytest.raises(ValueError, match=r"layers="):
        MultiLayerProbe().fit(X, y)
    with pytest.raises(ValueError, match="sum to"):
        MultiLayerProbe(blocks=[10, 10]).fit(X, y)


# ------------------------------------------------------------------ disentangle

_F = np.random.default_rng(11)
W_SEM, W_TXT = _F.normal(size=(8, 24)), _F.normal(size=(8, 12))
D_LOW = _F.normal(size=16)


def _captioned(n, seed, signal_in="low"):
    """X = [semantic part driven by the caption content c | low-level part carrying the label].
    c is drawn the same way for real and fake; the 'caption embedding' t is another view of c.
    signal_in="content" is the control: fakes depict other content, low-level part is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    c = rng.normal(size=(n, 8))
    if signal_in == "content":
        c[:, 0] += 1.5 * (2 * y - 1)
    sem = c @ W_SEM / math.sqrt(8) + 0.3 * rng.normal(size=(n, 24))
    low = rng.normal(size=(n, 16))
    if signal_in == "low":
        low += 1.5 * np.outer(2 * y - 1, D_LOW / np.linalg.norm(D_LOW))
    text = c @ W_TXT / math.sqrt(8) + 0.1 * rng.normal(size=(n, 12))
    return np.concatenate([sem, low], 1).astype(np.float32), y, text.astype(np.float32), c


@pytest.mark.slow  # trains the disentangle head (test_disentangle_without_the_decorrelation_penalty is the fast one)
def test_disentangle_separates_semantic_from_low_level(tmp_path):
    X, y, text, _ = _captioned(600, 0)
    head = make_head("disentangle", k=32, hidden=64, batch_size=64, epochs=30, seed=0)
    with pytest.raises(ValueError, match="captions"):
        head.fit(X, y)
    info = head.fit(X, y, groups=np.arange(600), text=text)
    held = info["heldout_analysis"]
    assert set(held) == {"semantic", "low_level", "both"}
    assert held["low_level"]["auc"] > 0.9

    Xt, yt, _, ct = _captioned(600, 1)
    table = head.analysis(Xt, yt)
    assert table["low_level"]["auc"] > 0.9 and table["both"]["auc"] > 0.9
    assert table["semantic"]["auc"] < 0.7
    assert 0.0 <= table["semantic"]["accuracy"] <= 1.0

    # the semantic embedding does carry the caption content: it predicts c's first coordinate
    sem, low = head.embed(Xt)
    target = ct[:, 0]
    coef, *_ = np.linalg.lstsq(np.c_[sem, np.ones(600)], target, rcond=None)
    assert np.corrcoef(np.c_[sem, np.ones(600)] @ coef, target)[0, 1] > 0.8

    again = _round_trip(head, tmp_path)
    assert isinstance(again, DisentangleProbe)
    assert all(k.split(".")[0] in {"sem", "low", "txt", "log_temperature", "mean", "std", "text_mean", "text_std",
                                   "probe_sem", "probe_low", "probe_both"} for k in head.state())
    np.testing.assert_array_equal(again.predict(Xt), head.predict(Xt))
    assert again.analysis(Xt, yt) == table
    assert again.predict(Xt[:1]).shape == (1,)


@pytest.mark.slow  # trains the disentangle head (test_disentangle_without_the_decorrelation_penalty is the fast one)
def test_disentangle_sees_content_signal_when_there_is_one():
    """Control: when fakes differ only in what they depict, the semantic probe finds it."""
    X, y, text, _ = _captioned(600, 2, signal_in="content")
    head = DisentangleProbe(k=32, hidden=64, batch_size=64, epochs=30, seed=0)
    head.fit(X, y, text=text)
    Xt, yt, _, _ = _captioned(600, 3, signal_in="content")
    assert head.analysis(Xt, yt)["semantic"]["auc"] > 0.85


def test_cross_correlation_penalty_by_hand():
    from fakescope.heads.disentangle import cross_correlation_penalty
    a = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]], dtype=torch.float64)
    # a standardised: +-1 / sqrt(4/3) (unbiased std); cov with b = 3 * a / sqrt(4/3): 3 / sqrt(4/3);
    # squared 27/4, over b's total variance 9 -> 0.75
    b = 3 * a
    assert float(cross_correlation_penalty(a, b)) == pytest.approx(0.75, rel=1e-4)  # 1e-5 guards the std
    assert float(cross_correlation_penalty(a, torch.tensor([[1.0], [1.0], [-1.0], [-1.0]], dtype=torch.float64))) == \
        pytest.approx(0.0, abs=1e-12)


def test_disentangle_without_the_decorrelation_penalty():
    """ortho_weight=0 (issue 19: the penalty pushes real/fake signal out of the semantic branch by
    construction) trains without it: the two branches end up more correlated than with it."""
    X, y, text, _ = _captioned(400, 4)
    opts = dict(k=16, hidden=32, batch_size=64, epochs=12, seed=0)
    with_pen = DisentangleProbe(**opts).fit(X, y, groups=np.arange(400), text=text)
    without = DisentangleProbe(ortho_weight=0.0, **opts).fit(X, y, groups=np.arange(400), text=text)
    assert without["last_epoch_losses"]["decorrelation"] > with_pen["last_epoch_losses"]["decorrelation"]
    assert DisentangleProbe(ortho_weight=0.0).config()["ortho_weight"] == 0.0


def ref_info_nce_groups(a, b, t, groups):
    """Loop reference of the multi-positive InfoNCE: P(i) = rows of i's family."""
    a, b = _unit(a), _unit(b)
    n = len(a)
    row = col = 0.0
    for i in range(n):
        pos = [j for j in range(n) if groups[j] == groups[i]]
        zr = sum(math.exp(_dot(a[i], b[k]) / t) for k in range(n))
        zc = sum(math.exp(_dot(a[k], b[i]) / t) for k in range(n))
        row -= sum(math.log(math.exp(_dot(a[i], b[j]) / t) / zr) for j in pos) / len(pos)
        col -= sum(math.log(math.exp(_dot(a[j], b[i]) / t) / zc) for j in pos) / len(pos)
    return 0.5 * (row + col) / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_info_nce_with_families_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    z, w = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    groups = [0, 0, 1, 2, 2, 2, 3]
    got = float(info_nce(_t(z), _t(w), 0.1, groups=torch.tensor(groups)))
    assert got == pytest.approx(ref_info_nce_groups(z.tolist(), w.tolist(), 0.1, groups), rel=1e-9)
    # all families of one: the plain loss
    assert float(info_nce(_t(z), _t(w), 0.1, groups=torch.arange(7))) == \
        pytest.approx(float(info_nce(_t(z), _t(w), 0.1)), rel=1e-12)


def test_info_nce_with_families_by_hand():
    """Two rows of one family, identical unit vectors a = b = e1, temperature 1: every logit is 1,
    each softmax entry 1/2, and both entries are positives: loss = -log(1/2) = log 2."""
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert float(info_nce(e, e, 1.0, groups=torch.tensor([5, 5]))) == pytest.approx(math.log(2), rel=1e-12)
    # as two families the same rows are each other's negatives: -log(e^1 / (e^1 + e^1)) = log 2 as well,
    # but orthogonal captions tell the two apart: logits [[1, 0], [1, 0]] -> rows log(1 + e^-1) and log(1 + e)
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    rows = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    cols = (math.log(2) + math.log(2)) / 2  # column 0: [1, 1] target 0; column 1: [0, 0] target 1
    assert float(info_nce(e, b, 1.0)) == pytest.approx(0.5 * (rows + cols), rel=1e-12)
    # one family: row i's positives are both captions: -(log p_i0 + log p_i1) / 2, columns likewise
    p0, p1 = math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)
    rows_f = -(math.log(p0) + math.log(p1)) / 2
    cols_f = -(math.log(0.5) + math.log(0.5)) / 2
    assert float(info_nce(e, b, 1.0, groups=torch.tensor([0, 0]))) == pytest.approx(0.5 * (rows_f + cols_f), rel=1e-12)


def test_family_batches_keep_families_together():
    from fakescope.heads.disentangle import _family_batches
    family = np.repeat(np.arange(40), 2)[:79]  # 39 pairs and one single row
    rows = np.arange(79)
    batches = _family_batches(rows, family, 16, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == rows.tolist()
    assert all(len(b) <= 16 for b in batches)
    where = {int(r): i for i, b in enumerate(batches) for r in b}
    assert all(where[2 * k] == where[2 * k + 1] for k in range(39))


def _families(n_pairs, seed):
    """Each real photo and its fake child share content c (one caption); the child differs only by a
    low-level shift, the same direction for every child."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_pairs, 8))
    sem = c @ W_SEM / math.sqrt(8)
    text = c @ W_TXT / math.sqrt(8) + 0.1 * rng.normal(size=(n_pairs, 12))
    rows, labels = [], []
    for y in (0, 1):
        low = rng.normal(size=(n_pairs, 16)) + 1.5 * y * D_LOW / np.linalg.norm(D_LOW)
        rows.append(np.c_[sem + 0.3 * rng.normal(size=sem.shape), low])
        labels.append(np.full(n_pairs, y))
    X = np.concatenate(rows).astype(np.float32)
    return X, np.concatenate(labels), np.concatenate([text, text]).astype(np.float32), np.tile(np.arange(n_pairs), 2)


def test_disentangle_with_pairs_as_positives():
    """pair_positives=True (issue 19 item 8): without the decorrelation penalty, a parent and its
    child are pulled together in the semantic space, so their semantic embeddings end up closer
    than when each image only matches its own caption; the low-level branch still separates them."""
    X, y, text, fam = _families(200, 5)
    opts = dict(k=16, hidden=32, batch_size=64, epochs=15, seed=0, ortho_weight=0.0)
    plain = DisentangleProbe(**opts)
    plain.fit(X, y, groups=fam, text=text)
    paired = DisentangleProbe(pair_positives=True, **opts)
    info = paired.fit(X, y, groups=fam, text=text)
    assert info["families_in_training"] > 150  # the held-out split keeps families whole
    Xt, yt, _, _ = _families(200, 6)

    def parent_child_cos(head):
        sem, _ = head.embed(Xt)
        return float((sem[:200] * sem[200:]).sum(1).mean())

    assert parent_child_cos(paired) > parent_child_cos(plain) + 0.02
    assert paired.analysis(Xt, yt)["low_level"]["auc"] > 0.8  # the data's ceiling is Phi(1.5 / sqrt 2) = 0.86
    assert DisentangleProbe.from_state(paired.config(), paired.state()).pair_positives is True
