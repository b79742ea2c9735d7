"""robust-mlp head: CVaR / AUC losses against slow references, SAM against a hand computation,
and the head itself (learns, imbalanced data, deterministic, save/load without pickle)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.numpy import load_file  # noqa: E402

from fakescope.backbones import BackboneSpec  # noqa: E402
from fakescope.detector import Detector, load_detector  # noqa: E402
from fakescope.evaluation.metrics import roc_auc  # noqa: E402
from fakescope.heads import head_from_state, make_head, methods  # noqa: E402
from fakescope.heads.losses import auc_loss, cvar_loss, robust_loss  # noqa: E402
from fakescope.data.splits import HEAD_SPLIT, split_by_group  # noqa: E402
from fakescope.heads.robust_mlp import RobustMLP, stratified_batches  # noqa: E402
from fakescope.heads.sam import SAM  # noqa: E402

SMALL = dict(hidden=[32, 16], epochs=12, batch_size=64, lr=1e-2)  # tiny and quick, still the full recipe


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ losses
def _cvar_ref(losses: np.ndarray, share: float) -> float:
    k = math.ceil(round(share * len(losses), 9))
    return float(np.sort(losses)[::-1][:k].mean())


@pytest.mark.parametrize("n,shares", [(10, (1.0, 0.5, 0.3, 0.2, 0.1)), (20, (1.0, 0.75, 0.2, 0.05)),
                                      (40, (1.0, 0.5, 0.25, 0.1, 0.025))])
def test_cvar_is_mean_of_worst_fraction(n, shares):
    rng = np.random.default_rng(n)
    losses = rng.exponential(size=n)
    for share in shares:
        got = cvar_loss(torch.tensor(losses), share)  # the paper's reading: alpha = the share averaged
        assert float(got) == pytest.approx(_cvar_ref(losses, share), rel=1e-12, abs=1e-12), share
        old = cvar_loss(torch.tensor(losses), 1.0 - share, convention="quantile") if share < 1 else None
        if old is not None:  # fakescope's old reading: alpha = the quantile level
            assert float(old) == pytest.approx(float(got), rel=1e-12, abs=1e-12), share


def test_cvar_paper_convention_by_hand():
    l = torch.tensor([0.3, 2.0, 0.1, 1.5, 0.7, 0.2, 0.9, 0.05, 1.1, 0.4], dtype=torch.float64, requires_grad=True)
    # alpha = 0.8 as in the Purdue code: the worst 8 of 10 (all but 0.1 and 0.05), each weighted 1/8
    assert float(cvar_loss(l, 0.8).detach()) == pytest.approx((0.3 + 2.0 + 1.5 + 0.7 + 0.2 + 0.9 + 1.1 + 0.4) / 8)
    # the old reading of the same alpha: the worst 2 of 10
    assert float(cvar_loss(l, 0.8, convention="quantile").detach()) == pytest.approx((2.0 + 1.5) / 2)
    # lambda = 0.2 minimises lambda + mean[(l - lambda)+] / 0.8: 0.2 + (0.1+1.8+1.3+0.5+0.7+0.9+0.2) / 10 / 0.8
    assert float(cvar_loss(l, 0.8).detach()) == pytest.approx(0.2 + 5.5 / 10 / 0.8)
    cvar_loss(l, 0.8).backward()
    expect = torch.full((10,), 1 / 8, dtype=torch.float64)
    expect[[2, 7]] = 0.0
    torch.testing.assert_close(l.grad, expect)
    assert float(cvar_loss(l, 1.0).detach()) == pytest.approx(float(l.mean().detach()), abs=1e-12)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            cvar_loss(l, bad)
    with pytest.raises(ValueError):
        cvar_loss(l, 0.5, convention="upside-down")


def test_cvar_alpha0_is_mean_and_gradient_on_worst():
    l = torch.tensor([0.3, 2.0, 0.1, 1.5, 0.7, 0.2, 0.9, 0.05, 1.1, 0.4], dtype=torch.float64, requires_grad=True)
    q = dict(convention="quantile")
    assert float(cvar_loss(l, 0.0, **q).detach()) == pytest.approx(float(l.mean().detach()), abs=1e-12)
    cvar_loss(l, 0.7, **q).backward()  # worst 3 of 10: 2.0, 1.5, 1.1, each weighted 1/3
    expect = torch.zeros(10, dtype=torch.float64)
    expect[[1, 3, 8]] = 1 / 3
    torch.testing.assert_close(l.grad, expect)
    l.grad = None
    cvar_loss(l, 0.25).backward()  # worst 2.5 of 10: 2.0 and 1.5 at 1/2.5, half of 1.1
    expect[[1, 3, 8]] = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    torch.testing.assert_close(l.grad, expect)
    assert float(cvar_loss(l, 0.25).detach()) == pytest.approx((2.0 + 1.5 + 0.5 * 1.1) / 2.5)
    with pytest.raises(ValueError):
        cvar_loss(l, 1.0, **q)


@pytest.mark.parametrize("n,alpha", [(10, 0.8), (7, 0.8), (13, 0.5), (5, 1.0), (9, 0.05)])
def test_cvar_equals_minimum_of_variational_form(n, alpha):
    rng = np.random.default_rng(7 + n)
    l = rng.normal(size=n)
    # the Purdue code's form, lambda + mean[(l - lambda)+] / alpha, minimised over lambda (they use
    # scipy's fminbound); piecewise linear in lambda, so its minimum sits on a data point; add a grid too
    grid = np.concatenate([l, np.linspace(l.min() - 1, l.max() + 1, 2001)])
    values = grid + np.maximum(l[None, :] - grid[:, None], 0).mean(1) / alpha
    assert float(cvar_loss(torch.tensor(l), alpha)) == pytest.approx(values.min(), abs=1e-12)


def _auc_ref(s, y, margin, power):
    tot, n = 0.0, 0
    for i in range(len(s)):
        for j in range(len(s)):
            if y[i] == 1 and y[j] == 0:
                tot += max(0.0, margin - (s[i] - s[j])) ** power
                n += 1
    return tot / n


@pytest.mark.parametrize("margin,power", [(0.6, 2), (0.2, 2), (1.0, 1), (0.6, 3)])
def test_auc_loss_matches_pair_loop(margin, power):
    rng = np.random.default_rng(3)
    s = rng.uniform(size=15)
    y = (rng.uniform(size=15) < 0.4).astype(int)
    y[:2] = [0, 1]
    got = auc_loss(torch.tensor(s), torch.tensor(y), margin, power)
    assert float(got) == pytest.approx(_auc_ref(s, y, margin, power), rel=1e-12)


def test_auc_loss_zero_without_pairs_and_ranking_respected():
    s = torch.tensor([0.2, 0.9, 0.4], requires_grad=True)
    for y in ([0, 0, 0], [1, 1, 1]):
        out = auc_loss(s, torch.tensor(y))
        assert float(out.detach()) == 0.0 and out.requires_grad
        out.backward()  # still part of the graph
    # fakes above reals by more than the margin: no loss; by less: positive
    y = torch.tensor([0, 1, 0])
    assert float(auc_loss(torch.tensor([0.1, 0.95, 0.3]), y, margin=0.6)) == 0.0
    assert float(auc_loss(torch.tensor([0.1, 0.95, 0.3]), y, margin=0.7)) > 0.0


def test_robust_loss_combination():
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=20) * 2)
    y = torch.tensor((rng.uniform(size=20) < 0.5).astype(np.float64))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    cvar = float(cvar_loss(bce, 0.8))
    auc = float(auc_loss(torch.sigmoid(logits), y, 0.6, 2))
    assert float(robust_loss(logits, y, gamma=1.0)) == pytest.approx(cvar, rel=1e-12)
    assert float(robust_loss(logits, y, gamma=0.0)) == pytest.approx(auc, rel=1e-12)
    assert float(robust_loss(logits, y, gamma=0.5)) == pytest.approx(0.5 * cvar + 0.5 * auc, rel=1e-12)
    assert float(robust_loss(logits, y, alpha=1.0, gamma=1.0)) == pytest.approx(float(bce.mean()), rel=1e-12)
    assert float(robust_loss(logits, y, alpha=0.2, gamma=1.0, convention="quantile")) == \
        pytest.approx(cvar, rel=1e-12)
    on_logits = float(robust_loss(logits, y, gamma=0.0, margin=1.0, power=1, auc_on="logit"))
    assert on_logits == pytest.approx(float(auc_loss(logits, y, 1.0, 1)), rel=1e-12)


# ------------------------------------------------------------------ SAM
def _quadratic():
    a = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    w1 = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    w2 = torch.nn.Parameter(torch.tensor([1.5], dtype=torch.float64))

    def loss():  # not a plain quadratic in w2, so the gradient at the ascent point differs non-trivially
        return 0.5 * (a * w1 ** 2).sum() + w1.sum() * w2.sum() + (w2 ** 4).sum()

    def grad(v1, v2):
        return a * v1 + v2.sum(), torch.full_like(v2, float(v1.sum())) + 4 * v2 ** 3
    return w1, w2, loss, grad


def test_sam_steps_match_hand_computation():
    w1, w2, loss, grad = _quadratic()
    rho, lr = 0.05, 0.1
    opt = SAM([w1, w2], torch.optim.SGD, rho=rho, lr=lr)
    start1, start2 = w1.detach().clone(), w2.detach().clone()
    g1, g2 = grad(start1, start2)
    norm = torch.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())  # global norm over both parameters

    loss().backward()
    opt.first_step(zero_grad=True)
    torch.testing.assert_close(w1.detach() - start1, rho * g1 / norm)
    torch.testing.assert_close(w2.detach() - start2, rho * g2 / norm)
    assert w1.grad is None or float(w1.grad.abs().sum()) == 0.0

    loss().backward()
    p1, p2 = grad(start1 + rho * g1 / norm, start2 + rho * g2 / norm)  # gradient at the perturbed point
    torch.testing.assert_close(w1.grad, p1)
    opt.second_step(zero_grad=True)
    torch.testing.assert_close(w1.detach(), start1 - lr * p1)
    torch.testing.assert_close(w2.detach(), start2 - lr * p2)

    # step(closure) does the same two passes
    v1, v2, loss_b, _ = _quadratic()
    opt_b = SAM([v1, v2], torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        out = loss_b()
        out.backward()
        return out
    at_start = float(loss_b().detach())
    assert float(opt_b.step(closure).detach()) == at_start  # the loss at w, before the update
    torch.testing.assert_close(v1.detach(), w1.detach())
    torch.testing.assert_close(v2.detach(), w2.detach())


def test_sam_default_base_is_adamw_and_shares_groups():
    w = torch.nn.Parameter(torch.ones(3))
    opt = SAM([w], lr=1e-3, weight_decay=1e-4)
    assert isinstance(opt.base_optimizer, torch.optim.AdamW)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[0]["rho"] == 0.05 and opt.param_groups[0]["lr"] == 1e-3


# ------------------------------------------------------------------ the head
def _views(n_images: int, n_fake: int, dim: int, views: int, seed: int):
    """Images with a few noisy views each; fakes shifted along a random direction (separable)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).standard_normal(dim)
    direction /= np.linalg.norm(direction)
    base = rng.standard_normal((n_images, dim))
    y_img = np.zeros(n_images, int)
    y_img[rng.choice(n_images, n_fake, replace=False)] = 1
    base += np.outer(np.where(y_img == 1, 2.0, -2.0), direction)
    X = np.repeat(base, views, 0) + 0.2 * rng.standard_normal((n_images * views, dim))
    return X.astype(np.float32), np.repeat(y_img, views), np.repeat(np.arange(n_images), views)


@pytest.mark.parametrize("sam", [True, False])
def test_learns_separable_data(sam):
    X, y, g = _views(200, 100, 8, 2, seed=1)
    Xt, yt, _ = _views(200, 100, 8, 1, seed=2)
    head = make_head("robust-mlp", seed=0, sam=sam, **SMALL)
    info = head.fit(X, y, g)
    assert roc_auc(yt, head.predict(Xt)) > 0.95
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= SMALL["epochs"]
    assert info["heldout_auc"] > 0.95 and info["optimizer"]["sam"] is sam
    assert info["loss"] == {"alpha": 0.8, "alpha_convention": "share", "gamma": 0.5, "margin": 0.6, "power": 2,
                            "auc_on": "prob"}
    json.dumps(info)


def test_imbalanced_data_trains():
    X, y, g = _views(330, 30, 8, 1, seed=3)  # 1 fake per 10 real
    Xt, yt, _ = _views(330, 30, 8, 1, seed=4)
    head = make_head("robust-mlp", seed=0, **SMALL)
    info = head.fit(X, y, g)
    assert info["heldout_n"] > 0
    assert roc_auc(yt, head.predict(Xt)) > 0.95


def test_split_and_batches():
    groups = np.repeat(np.arange(55), 2)  # two views per image
    y = np.repeat((np.arange(55) < 5).astype(int), 2)
    held = split_by_group(groups, 0.15, 0, labels=y, salt=HEAD_SPLIT)  # as the head splits
    assert not set(groups[held]) & set(groups[~held])  # group-disjoint
    assert set(y[held]) == {0, 1} and set(y[~held]) == {0, 1}
    rng = np.random.default_rng(0)
    batches = stratified_batches(y, 16, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(y)))
    assert all(set(y[b]) == {0, 1} for b in batches)


def test_predict_shapes_determinism_and_rng_untouched():
    X, y, g = _views(80, 40, 6, 2, seed=5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_head("robust-mlp", seed=3, **{**SMALL, "epochs": 3})
    a.fit(X, y, g)
    assert torch.equal(torch.rand(1), before)  # fit forks the RNG instead of reseeding the caller's
    b = make_head("robust-mlp", seed=3, **{**SMALL, "epochs": 3})
    b.fit(X, y, g)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    one = a.predict(X[:1])
    assert one.shape == (1,) and one.dtype == np.float32
    assert a.predict(X[0]).shape == (1,)
    p = a.predict(X)
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(a.predict(X[5:6]), p[5:6], rtol=1e-5, atol=1e-6)  # eval mode: no batch effects


def test_save_load_roundtrip(tmp_path):
    X, y, g = _views(80, 40, 8, 2, seed=6)
    head = make_head("robust-mlp", seed=0, **{**SMALL, "epochs": 3})
    head.fit(X, y, g)
    cfg = head.config()
    assert json.loads(json.dumps(cfg)) == cfg and cfg["dim"] == 8 and cfg["hidden"] == [32, 16]
    assert cfg["alpha_convention"] == "share" and cfg["preset"] == "fakescope"
    state = head.state()
    assert "net.1.running_mean" in state and "net.5.running_var" in state and "mean" in state
    assert all(isinstance(v, np.ndarray) for v in state.values())

    again = head_from_state("robust-mlp", cfg, state)
    np.testing.assert_array_equal(again.predict(X), head.predict(X))

    spec = BackboneSpec(name="test-only", kind="hf-dinov2", weights="/nonexistent", dim=8)
    det = Detector(spec=spec, head=head, threshold=0.4, id="robust", version="1")
    d = det.save(tmp_path / "model")
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "detector.json", "head.safetensors"]
    assert set(load_file(str(d / "head.safetensors"))) == set(state)
    loaded = load_detector(d)
    assert isinstance(loaded.head, RobustMLP) and loaded.head.config() == cfg
    np.testing.assert_array_equal(loaded.head.predict(X), head.predict(X))


def test_make_head_options():
    assert "robust-mlp" in methods()
    head = make_head("robust-mlp", seed=0, alpha=0.9, sam=False)
    assert isinstance(head, RobustMLP) and head.alpha == 0.9 and head.sam is False
    assert (head.hidden, head.dropout, head.epochs, head.batch_size) == ([512, 128], 0.5, 30, 256)
    assert head.alpha_convention == "share" and head.schedule == "constant"
    assert make_head("robust-mlp", sam="false").sam is False
    assert make_head("robust-mlp", alpha=1.0).alpha == 1.0  # the paper's reading: the plain mean
    with pytest.raises(ValueError):
        make_head("robust-mlp", alpha=0.0)
    with pytest.raises(ValueError):
        make_head("robust-mlp", alpha=1.0, alpha_convention="quantile")
    with pytest.raises(ValueError):
        make_head("robust-mlp", preset="nonesuch")
    with pytest.raises(TypeError):
        make_head("robust-mlp", widht=3)


def test_purdue_preset_is_the_papers_head():
    head = make_head("robust-mlp", preset="purdue")
    assert head.hidden == [1536, 1536, 1536] and head.dropout == 0.335 and head.negative_slope == 0.01
    assert (head.lr, head.weight_decay, head.schedule, head.schedule_period, head.min_lr) == \
        (1e-3, 0.01, "cosine", 8, 1e-5)
    assert (head.epochs, head.batch_size, head.gamma, head.auc_on, head.margin, head.power) == \
        (32, 2048, 0.5, "logit", 0.6, 2)
    assert (head.alpha, head.alpha_convention, head.sam, head.rho, head.init) == (0.8, "share", True, 0.05, "kaiming")
    small = make_head("robust-mlp", preset="purdue", epochs=2, hidden=[24, 24, 24])  # options override the preset
    X, y, g = _views(120, 60, 8, 1, seed=8)
    small.fit(X, y, g)
    mods = list(small.net)
    assert [type(m).__name__ for m in mods[:4]] == ["Linear", "BatchNorm1d", "LeakyReLU", "Dropout"]
    assert sum(isinstance(m, torch.nn.Linear) for m in mods) == 4 and mods[3].p == 0.335
    again = head_from_state("robust-mlp", json.loads(json.dumps(small.config())), small.state())
    assert again.preset == "purdue" and again.alpha_convention == "share"
    np.testing.assert_array_equal(again.predict(X), small.predict(X))


def test_cosine_schedule_by_hand():
    from fakescope.heads.robust_mlp import cosine_lr
    # T = 8, lr 1e-3, min 1e-5: half-way down at epoch 4, the minimum at 8, back up at 16
    assert cosine_lr(0, 1e-3, 1e-5, 8) == pytest.approx(1e-3)
    assert cosine_lr(4, 1e-3, 1e-5, 8) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert cosine_lr(8, 1e-3, 1e-5, 8) == pytest.approx(1e-5)
    assert cosine_lr(16, 1e-3, 1e-5, 8) == pytest.approx(1e-3)
    # torch's CosineAnnealingLR stepped past T_max, as the Purdue trainer does
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=1e-5)
    for epoch in range(1, 33):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(epoch, 1e-3, 1e-5, 8), rel=1e-6), epoch


def test_heads_saved_with_the_old_alpha_reading_keep_it(tmp_path):
    """A config without alpha_convention (every head saved before issue 19) loads with the quantile reading."""
    X, y, g = _views(80, 40, 8, 2, seed=6)
    head = make_head("robust-mlp", seed=0, **{**SMALL, "epochs": 2})
    head.fit(X, y, g)
    old = {k: v for k, v in head.config().items() if k not in ("alpha_convention", "preset", "hidden",
                                                                "init", "schedule", "schedule_period", "min_lr")}
    old.update(h1=32, h2=16)
    loaded = head_from_state("robust-mlp", old, head.state())
    assert loaded.alpha_convention == "quantile" and loaded.hidden == [32, 16]
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    import fakescope
    shipped = [d for d in (Path(fakescope.__file__).parent / "models").iterdir()
               if (d / "detector.json").exists() and json.loads((d / "detector.json").read_text())["method"] == "robust-mlp"]
    assert shipped  # the shipped robust-mlp models were trained with the quantile reading and keep it
    for d in shipped:
        assert "alpha_convention" not in json.loads((d / "detector.json").read_text())["head"]
        head = load_detector(d).head
        assert head.alpha_convention == "quantile" and head.alpha == 0.8, d
