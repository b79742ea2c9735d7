"""Losses of the trained embeddings against slow reference loops (fakescope.training.losses)."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from fakescope.training.losses import (code_loss, natural_traces_loss, nt_xent, same_class_derangement,  # noqa: E402
                                       spherical_kmeans)


def unit(x):
    return [[a / math.sqrt(sum(b * b for b in v)) for a in v] for v in x]


def dot(a, b):
    return sum(p * q for p, q in zip(a, b))


def ref_code(local, global_, y, t, positives="class"):
    """CoDE InfoNCE, one anchor and one positive at a time; mean over each class, then over classes."""
    L, G = unit(local.tolist()), unit(global_.tolist())
    per = {0: [], 1: []}
    for i in range(len(y)):
        negs = [j for j in range(len(y)) if y[j] != y[i]]
        poss = [j for j in range(len(y)) if y[j] == y[i]] if positives == "class" else [i]
        terms = []
        for p in poss:
            num = math.exp(dot(L[i], G[p]) / t)
            den = num + sum(math.exp(dot(L[i], G[n]) / t) for n in negs)
            terms.append(-math.log(num / den))
        per[int(y[i])].append(sum(terms) / len(terms))
    means = {c: sum(v) / len(v) for c, v in per.items() if v}
    return sum(means.values()) / len(means), means


def batch(n=10, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), torch.tensor([0, 1] * (n // 2))


@pytest.mark.parametrize("positives", ["class", "pair"])
def test_code_loss_matches_reference(positives):
    l, g, y = batch()
    loss, parts = code_loss(l, g, y, 0.1, positives)
    want, means = ref_code(l, g, y.tolist(), 0.1, positives)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert parts["loss_real_anchored"] == pytest.approx(means[0], rel=1e-5)
    assert parts["loss_fake_anchored"] == pytest.approx(means[1], rel=1e-5)


def test_code_loss_is_anchored_on_both_classes():
    """The released CoDE trainer adds the real-anchored term twice and never the fake-anchored one.
    Here the fake local views are anchors too: the loss is the mean of both terms, and the fake
    local embeddings get a gradient (under the released bug they would get none: they appear in no term)."""
    l, g, y = batch(seed=1)
    l.requires_grad_(True)
    loss, parts = code_loss(l, g, y, 0.1, positives="class")
    assert float(loss.detach()) == pytest.approx(0.5 * (parts["loss_real_anchored"] + parts["loss_fake_anchored"]), rel=1e-6)
    assert float(loss.detach()) != pytest.approx(parts["loss_real_anchored"], rel=1e-3)   # not real twice (/2)
    loss.backward()
    assert float(l.grad[y == 1].abs().sum()) > 1e-4
    # the released objective (real-anchored term twice) leaves the fake local views without gradient
    l2 = l.detach().clone().requires_grad_(True)
    released_loss = 2 * released_real_term(l2, g, y, 0.1)
    released_loss.backward()
    assert float(l2.grad[y == 1].abs().sum()) == 0.0
    assert float(released_loss.detach()) == pytest.approx(2 * parts["loss_real_anchored"], rel=1e-5)


def ref_info_nce(q, k, y, t, pos_of):
    """Per-anchor InfoNCE, each positive against the keys of the other class; pos_of(i) lists i's positives."""
    Q, K = unit(q.tolist()), unit(k.tolist())
    out = []
    for i in range(len(y)):
        negs = [j for j in range(len(y)) if y[j] != y[i]]
        terms = []
        for p in pos_of(i):
            num = math.exp(dot(Q[i], K[p]) / t)
            terms.append(-math.log(num / (num + sum(math.exp(dot(Q[i], K[n]) / t) for n in negs))))
        out.append(sum(terms) / len(terms))
    return out


@pytest.mark.parametrize("positives", ["class", "pair"])
def test_code_loss_with_image_term_matches_reference(positives):
    """CoDE per class: (clean -> augmented other image of the class + local -> global) / 2; then the mean of the classes."""
    l, g, y = batch(n=8, seed=4)
    c, a, _ = batch(n=8, seed=5)
    yl = y.tolist()
    pair_index = torch.tensor([2, 3, 4, 5, 6, 7, 0, 1])  # same class, never itself
    loss, parts = code_loss(l, g, y, 0.1, positives, clean=c, augmented=a, pair_index=pair_index)
    local = ref_info_nce(l, g, yl, 0.1, (lambda i: [j for j in range(8) if yl[j] == yl[i]]) if positives == "class"
                         else (lambda i: [i]))
    image = ref_info_nce(c, a, yl, 0.1, lambda i: [int(pair_index[i])])
    per_class = {}
    for cls in (0, 1):
        idx = [i for i in range(8) if yl[i] == cls]
        li, ii = sum(local[i] for i in idx) / len(idx), sum(image[i] for i in idx) / len(idx)
        per_class[cls] = (li + ii) / 2
        name = "real" if cls == 0 else "fake"
        assert parts[f"loss_local_{name}"] == pytest.approx(li, rel=1e-5)
        assert parts[f"loss_image_{name}"] == pytest.approx(ii, rel=1e-5)
    assert float(loss) == pytest.approx((per_class[0] + per_class[1]) / 2, rel=1e-5)


def test_code_loss_by_hand():
    """Two reals along x, two fakes along y, t = 1: each positive has cosine 1, each of the 2 negatives
    cosine 0, so every anchor's loss is -log(e / (e + 2)), in both terms and for both classes."""
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    loss, parts = code_loss(v, v, y, 1.0, clean=v, augmented=v, pair_index=torch.tensor([1, 0, 3, 2]))
    assert float(loss) == pytest.approx(math.log((math.e + 2) / math.e), rel=1e-6)
    assert parts["loss_image_fake"] == pytest.approx(math.log((math.e + 2) / math.e), rel=1e-6)
    # a fake's clean image paired with a real's augmented view would be a positive across classes: the
    # derangement never does that, and a pair index pointing at the image itself is CoDE's fallback only
    idx = same_class_derangement(torch.tensor([0, 1, 0, 1, 1, 0, 1]), torch.Generator().manual_seed(0))
    yy = [0, 1, 0, 1, 1, 0, 1]
    assert sorted(idx.tolist()) == list(range(7))
    assert all(yy[j] == yy[i] and j != i for i, j in enumerate(idx.tolist()))
    assert same_class_derangement(torch.tensor([0, 1, 1])).tolist()[0] == 0   # alone in its class: itself
    with pytest.raises(ValueError):
        code_loss(v, v, y, clean=v)


def test_code_objective_adds_the_image_term_when_the_batch_has_it():
    from fakescope.training.code import code_objective
    from fakescope.training.engine import StepContext
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    l, g, y = batch(n=8, seed=6)
    c, a, _ = batch(n=8, seed=7)
    ctx = StepContext(rank=0, world_size=1, epoch=0, step=5, device=torch.device("cpu"))
    loss, parts = code_objective(0.1)(model, {"global": g, "local": l, "clean": c, "augmented": a, "label": y}, ctx)
    idx = same_class_derangement(y, torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, _ = code_loss(model(l), model(g), y, 0.1, "pair", model(c), model(a), idx)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5) and "loss_image_real" in parts
    only_local, parts = code_objective(0.1)(model, {"global": g, "local": l, "label": y}, ctx)
    assert "loss_image_real" not in parts and float(only_local.detach()) != pytest.approx(float(loss.detach()), rel=1e-3)


def released_real_term(l, g, y, t):
    """The real-anchored InfoNCE alone, torch ops written out (what the released trainer sums twice)."""
    l, g = F.normalize(l, dim=1), F.normalize(g, dim=1)
    terms = []
    for i in torch.nonzero(y == 0).squeeze(1).tolist():
        neg = torch.exp(l[i] @ g[y == 1].T / t).sum()
        pos = torch.exp(l[i] @ g[y == 0].T / t)
        terms.append(-torch.log(pos / (pos + neg)).mean())
    return torch.stack(terms).mean()


def test_code_loss_single_class_and_gradient_direction():
    l, g, _ = batch()
    zero, parts = code_loss(l, g, torch.zeros(10, dtype=torch.long))
    assert float(zero) == 0.0 and "loss_fake_anchored" not in parts        # no negatives: nothing to contrast
    # moving a fake local view towards the fake global views lowers the loss
    l, g, y = batch(seed=2)
    before = float(code_loss(l, g, y, positives="class")[0])
    l2 = l.clone()
    l2[1] = F.normalize(g[y == 1].mean(0), dim=0) * 3
    assert float(code_loss(l2, g, y, positives="class")[0]) < before
    # per-pair positives (the default): towards its own global view
    before = float(code_loss(l, g, y)[0])
    l2[1] = g[1]
    assert float(code_loss(l2, g, y)[0]) < before


def ref_nt_xent(z1, z2, t):
    Z = unit(torch.cat([z1, z2]).tolist())
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        den = sum(math.exp(dot(Z[i], Z[a]) / t) for a in range(2 * n) if a != i)
        total += -math.log(math.exp(dot(Z[i], Z[p]) / t) / den)
    return total / (2 * n)


def test_nt_xent_matches_reference():
    a, b, _ = batch(8, 5, seed=3)
    assert float(nt_xent(a, b, 0.2)) == pytest.approx(ref_nt_xent(a, b, 0.2), rel=1e-5)


def ref_nt(z, y, c, t):
    Z, C = unit(z.tolist()), unit(c.tolist())
    reals = [i for i in range(len(y)) if y[i] == 0]
    real_terms = []
    for i in reals:
        A = [("r", j) for j in range(len(y)) if j != i] + [("c", k) for k in range(len(C))]
        P = [("r", j) for j in reals if j != i] + [("c", k) for k in range(len(C))]
        def s(m):
            return dot(Z[i], Z[m[1]] if m[0] == "r" else C[m[1]]) / t
        den = sum(math.exp(s(a)) for a in A)
        real_terms.append(-sum(math.log(math.exp(s(p)) / den) for p in P) / len(P))
    proto_terms = []
    for k in range(len(C)):
        den = sum(math.exp(dot(C[k], Z[j]) / t) for j in range(len(y)))
        proto_terms.append(-sum(math.log(math.exp(dot(C[k], Z[j]) / t) / den) for j in reals) / len(reals))
    return sum(real_terms) / len(real_terms) + sum(proto_terms) / len(proto_terms)


def test_natural_traces_loss_matches_reference():
    z, c, _ = batch(12, 6, seed=4)
    y = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    protos = c[:3]
    loss, parts = natural_traces_loss(z, y, protos, 0.1)
    assert float(loss) == pytest.approx(ref_nt(z, y.tolist(), protos, 0.1), rel=1e-5)
    assert parts["loss_real_anchored"] > 0 and parts["loss_prototype_anchored"] > 0


def test_natural_traces_pushes_fakes_from_the_traces_and_never_pulls_fakes_together():
    z, c, _ = batch(8, 6, seed=5)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    protos = c[:2]
    base = float(natural_traces_loss(z, y, protos)[0])
    near = z.clone()
    near[4] = protos[0] * 2                       # a fake sitting on a natural trace is penalised
    assert float(natural_traces_loss(near, y, protos)[0]) > base
    # fake-fake similarity is not in the loss: permuting / collapsing fakes among themselves
    # while keeping their similarities to reals and traces changes nothing
    zf = z.clone().requires_grad_(True)
    loss = natural_traces_loss(zf, y, protos)[0]
    loss.backward()
    # a fake row's gradient comes only through real/prototype anchors' denominators
    g_fake = zf.grad[4:]
    assert float(g_fake.abs().sum()) > 0
    only_fakes, _ = natural_traces_loss(z[4:], y[4:], protos)
    assert float(only_fakes) == 0.0               # no real anchor: nothing to contrast


def test_spherical_kmeans_finds_two_directions():
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([1.0, 0, 0]) + 0.05 * torch.randn(50, 3, generator=g)
    b = torch.tensor([0, 1.0, 0]) + 0.05 * torch.randn(50, 3, generator=g)
    c = spherical_kmeans(torch.cat([a, b]), 2)
    best = sorted((c @ torch.eye(3)[:2].T).max(0).values.tolist())
    assert best[0] > 0.99
    assert np.allclose(c.norm(dim=1).numpy(), 1, atol=1e-5)


# ------------------------------------------------------------------ natural traces: supervised term, scoring (issue 19)
def test_stage2_adds_the_weighted_supervised_term():
    from fakescope.training.engine import StepContext
    from fakescope.training.natural_traces import WithTraces, stage2_objective
    torch.manual_seed(0)
    enc = torch.nn.Linear(6, 4)
    protos = F.normalize(torch.randn(3, 4), dim=1)
    model = WithTraces(enc, protos, classifier=True)
    g, l, y = batch(n=6, seed=8)
    ctx = StepContext(rank=0, world_size=1, epoch=0, step=0, device=torch.device("cpu"))
    loss, parts = stage2_objective(0.1, supervised_weight=0.5)(model, {"global": g, "local": l, "label": y}, ctx)
    with torch.no_grad():
        zg, zl = enc(g), enc(l)
        contrastive, _ = natural_traces_loss(torch.cat([zg, zl]), torch.cat([y, y]), protos, 0.1)
        w, b = model.classifier.weight[0].tolist(), float(model.classifier.bias)
        bce = 0.0
        for z, t in zip(torch.cat([zg, zl]).tolist(), torch.cat([y, y]).tolist()):
            u = unit([z])[0]
            p = 1 / (1 + math.exp(-(dot(u, w) + b)))                 # P(fake) of the linear classifier
            bce += -math.log(p if t == 1 else 1 - p)
        bce /= 12
    assert parts["loss_supervised"] == pytest.approx(bce, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(contrastive) + 0.5 * bce, rel=1e-5)
    plain = WithTraces(enc, protos)   # supervised_weight 0: no classifier, the contrastive loss alone
    only, parts = stage2_objective(0.1, supervised_weight=0.0)(plain, {"global": g, "local": l, "label": y}, ctx)
    assert float(only.detach()) == pytest.approx(float(contrastive), rel=1e-6) and "loss_supervised" not in parts


def test_distance_to_given_traces():
    from fakescope.heads import head_from_state, make_head
    traces = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)     # normalised by the head
    X = np.array([[1, 0, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)
    y = np.array([0, 1, 0, 1])
    head = make_head("distance", centres=traces)
    info = head.fit(X, y)
    # 1 - max_k cos(x, c_k) by hand: 0, 1, 1 - 1/sqrt(2), 1 - 1/sqrt(2)
    np.testing.assert_allclose(head.distance(X), [0, 1, 1 - 2 ** -0.5, 1 - 2 ** -0.5], atol=1e-6)
    np.testing.assert_allclose(head.centres, [[1, 0, 0], [0, 1, 0]])          # not refitted on the reals
    assert info["centres_from"] == "given" and head.config()["prototypes"] == 2
    again = head_from_state("distance", head.config(), head.state())
    assert again.centres_from == "given"
    np.testing.assert_array_equal(again.predict(X), head.predict(X))
    refit = make_head("distance")
    refit.fit(X, y)
    assert refit.centres_from == "real-kmeans"
