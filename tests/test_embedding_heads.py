"""Heads on embeddings: cosine k-NN, one-class SVM (vs scikit-learn), distance to the real cluster;
the saved trained-embedding head (encoder + head) and the `pixels` / `trained:<dir>` backbones."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fakescope.backbones import load_backbone, parse_spec  # noqa: E402
from fakescope.evaluation.metrics import roc_auc  # noqa: E402
from fakescope.heads import head_from_state, make_head  # noqa: E402


def clusters(n=60, d=8, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    real = rng.normal(0, 0.3, (n, d)) + np.eye(d)[0] * 2
    fake = rng.normal(0, 0.3 * spread, (n, d)) + np.eye(d)[1] * 2
    return np.concatenate([real, fake]).astype(np.float32), np.r_[np.zeros(n), np.ones(n)].astype(int)


def roundtrip(head):
    return head_from_state(head.method, head.config(), head.state())


def test_knn_votes_of_the_nearest_by_cosine():
    X, y = clusters()
    head = make_head("knn", k=5)
    head.fit(X, y)
    Q = np.array([[2, 0, 0, 0, 0, 0, 0, 0], [0, 2, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0.01]], np.float32)
    p = head.predict(Q)
    assert p[0] < 0.05 and p[1] > 0.95 and 0.05 < p[2] < 0.95
    # brute force: exp(cos/T)-weighted share of fakes among the k most similar references
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = Q[2] / np.linalg.norm(Q[2])
    s = U @ q
    top = np.argsort(-s)[:5]
    w = np.exp((s[top] - s[top].max()) / 0.1)
    assert head.vote(Q)[2] == pytest.approx((w * y[top]).sum() / w.sum(), rel=1e-5)
    fk, rl = np.sort(U[y == 1] @ q)[::-1][:5].mean(), np.sort(U[y == 0] @ q)[::-1][:5].mean()
    assert head.margin(Q)[2] == pytest.approx(fk - rl, abs=1e-5)
    # ties are broken: all-fake neighbourhoods still rank by how close they are to fakes vs reals
    far = np.array([[0, 2, 0, 0, 0, 0, 0, 0], [0.3, 2, 0, 0, 0, 0, 0, 0]], np.float32)
    assert head.vote(far).tolist() == [1.0, 1.0] and head.predict(far)[0] > head.predict(far)[1]
    assert np.allclose(roundtrip(head).predict(Q), p)
    assert make_head("knn", k=1).fit(X, y)["k"] == 1
    with pytest.raises(ValueError):
        make_head("knn", k=0)


def test_ocsvm_ranks_like_scikit_learn():
    sk = pytest.importorskip("sklearn.svm")
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 6)).astype(np.float32)
    test = np.concatenate([rng.normal(size=(150, 6)), rng.normal(size=(150, 6)) * 2.5]).astype(np.float32)
    yt = np.r_[np.zeros(150), np.ones(150)]
    head = make_head("ocsvm", nu=0.1, normalize=False, n_features=2048)
    info = head.fit(train, np.zeros(300, int))
    ref = sk.OneClassSVM(nu=0.1, gamma="scale").fit(train)
    ours, theirs = head.decision_function(test), ref.decision_function(test)
    assert spearmanr(ours, theirs).statistic > 0.97
    assert abs(roc_auc(yt, -ours) - roc_auc(yt, -theirs)) < 0.02
    assert info["outlier_fraction_real"] == pytest.approx(0.1, abs=0.03)    # nu bounds the training outliers
    assert np.allclose(roundtrip(head).predict(test), head.predict(test))


def test_ocsvm_is_fitted_on_reals_only():
    X, y = clusters(seed=1)
    a = make_head("ocsvm", nu=0.1)
    a.fit(X, y)
    b = make_head("ocsvm", nu=0.1)
    b.fit(np.concatenate([X[y == 0], X[y == 1] * 0 + 5]), y)   # different fakes: same support, same w and rho
    assert np.allclose(a.w, b.w) and a.rho == pytest.approx(b.rho)
    p = a.predict(X)
    assert roc_auc(y, p) > 0.99 and ((p >= 0) & (p <= 1)).all()
    only_reals = make_head("ocsvm")
    only_reals.fit(X[y == 0], np.zeros(60, int))
    assert roc_auc(y, only_reals.predict(X)) > 0.99


def test_distance_head_scores_distance_to_the_real_cluster():
    X, y = clusters(seed=2)
    head = make_head("distance", prototypes=2)
    info = head.fit(X, y)
    assert info["mean_distance_real"] < info["mean_distance_fake"]
    p = head.predict(X)
    assert roc_auc(y, p) > 0.99
    assert p.max() < 1.0 and len(np.unique(p)) == len(p)      # separable data: the sigmoid still ranks (no ties at 1)
    assert np.allclose(roundtrip(head).predict(X), p)
    assert np.allclose(np.linalg.norm(head.centres, axis=1), 1, atol=1e-5)
    lone = make_head("distance")
    lone.fit(X[y == 0], np.zeros(60, int))                      # reals only: a fixed sigmoid
    assert roc_auc(y, lone.predict(X)) > 0.99
    with pytest.raises(ValueError):
        make_head("distance").fit(X[y == 1], np.ones(60, int))


@pytest.fixture()
def tiny_vit():
    from fakescope.backbones.encoders import ViT, ViTConfig
    torch.manual_seed(0)
    return ViT(ViTConfig(image_size=8, patch=4, dim=16, depth=1, heads=2))


def test_trained_head_saves_encoder_and_head_in_one_state(tiny_vit):
    from fakescope.heads.trained_embedding import CoDEHead, make_inner_head
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3 * 8 * 8)).astype(np.float32)
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    head = CoDEHead(encoder=tiny_vit, input_shape=(3, 8, 8), head=make_inner_head("logistic"))
    head.fit(X, y)
    again = roundtrip(head)
    assert again.method == "code" and again.config()["head_method"] == "linear"
    assert np.allclose(again.predict(X), head.predict(X), atol=1e-6)
    assert all(k.startswith(("encoder.", "head.")) for k in head.state())
    with pytest.raises(ValueError, match="trains its own encoder"):
        make_head("code").fit(X, y)


def test_embed_tiles_large_inputs(tiny_vit):
    from fakescope.backbones.encoders import embed, tiles
    x = torch.arange(2 * 3 * 17 * 17, dtype=torch.float32).reshape(2, 3, 17, 17)
    t = tiles(x, 8)
    assert t.shape == (2, 4, 3, 8, 8) and torch.equal(t[0, 0], x[0, :, 0:8, 0:8])
    big = np.random.default_rng(0).normal(size=(3, 3 * 16 * 16)).astype(np.float32)
    z = embed(tiny_vit, big, (3, 16, 16))
    assert z.shape == (3, 16) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    manual = embed(tiny_vit, tiles(torch.from_numpy(big).reshape(3, 3, 16, 16), 8)[0].reshape(4, -1).numpy(), (3, 8, 8))
    m = manual.mean(0)
    assert np.allclose(z[0], m / np.linalg.norm(m), atol=1e-5)


def test_pixels_and_trained_backbones(tmp_path, tiny_vit):
    from PIL import Image

    from fakescope.backbones import preprocess
    from fakescope.backbones.encoders import embed, save_encoder
    spec = parse_spec("pixels?size=8")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    x = preprocess(img, spec)[None]
    f = load_backbone(spec).forward(x)
    assert f.pooled.shape == (1, 3 * 64) and -1 <= f.pooled.min() and f.pooled.max() <= 1
    save_encoder(tmp_path / "enc", tiny_vit, asdict(spec))
    tspec = parse_spec(f"trained:{tmp_path / 'enc'}")
    assert tspec.kind == "trained:" and tspec.input_size == 8 and tspec.dim == 16
    z = load_backbone(tspec).forward(x).pooled
    assert np.allclose(z, embed(tiny_vit, f.pooled, (3, 8, 8)), atol=1e-6)
    with pytest.raises(FileNotFoundError):
        parse_spec(f"trained:{tmp_path / 'missing'}")


def test_score_map_never_saturates_on_separable_scores():
    from fakescope.heads.prototype import MAX_SLOPE, _sigmoid, fit_score_map
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(0, 1, 300), rng.normal(8, 1, 300), [40.0]]     # separable, with an outlier
    y = np.r_[np.zeros(300), np.ones(301)]
    a, b = fit_score_map(s, y)
    p = _sigmoid(a * s + b)
    assert np.isfinite([a, b]).all() and 0 < a * s.std() <= MAX_SLOPE + 1e-9
    assert len(np.unique(p[:600])) == 600 and p.mean() == pytest.approx(y.mean(), abs=1e-3)


# ------------------------------------------------------------------ CoDE's published heads (issue 19)
def test_knn_k1_is_exact_cosine_1nn():
    X, y = clusters(n=40, seed=3, spread=3.0)
    Q = np.random.default_rng(4).normal(0, 1.5, (50, 8)).astype(np.float32)
    head = make_head("knn", k=1)
    head.fit(X, y)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    V = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    nearest = y[np.argmax(V @ U.T, axis=1)]                      # brute-force 1-NN by cosine
    np.testing.assert_array_equal(roundtrip(head).predict(Q) > 0.5, nearest == 1)


def test_poly_ocsvm_is_scikit_learns_and_scores_without_it():
    sklearn_svm = pytest.importorskip("sklearn.svm")
    X, y = clusters(n=50, seed=5)
    head = make_head("ocsvm-poly")
    info = head.fit(X, y)
    ref = sklearn_svm.OneClassSVM(nu=0.1, kernel="poly", gamma="auto").fit(X[y == 0].astype(np.float64))
    np.testing.assert_allclose(head.decision_function(X), ref.decision_function(X), rtol=1e-6, atol=1e-8)
    assert info["gamma"] == pytest.approx(1 / 8)
    # f(x) by hand: sum_i alpha_i (<s_i, x> / 8) ** 3 + intercept
    x = X[-1].astype(np.float64)
    hand = sum(a * (float(s.astype(np.float64) @ x) / 8) ** 3 for a, s in zip(head.dual, head.support)) + head.intercept
    assert head.decision_function(X[-1:])[0] == pytest.approx(hand, rel=1e-9)
    import json
    again = head_from_state("ocsvm-poly", json.loads(json.dumps(head.config())), head.state())
    np.testing.assert_array_equal(again.predict(X), head.predict(X))
    assert all(isinstance(v, np.ndarray) for v in head.state().values())
    assert roc_auc(y, head.predict(X)) > 0.9


def test_logistic_with_C_is_scikit_learns_balanced_logistic_regression():
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(6)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    y = ((X[:, 0] + 0.7 * rng.normal(size=90)) > 0.6).astype(int)   # imbalanced: the class weights matter
    head = make_head("linear", C=0.316, standardize=False)
    head.fit(X, y)
    ref = lm.LogisticRegression(C=0.316, class_weight="balanced", tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(head.weight, ref.coef_[0], atol=2e-4)
    assert head.bias == pytest.approx(float(ref.intercept_[0]), abs=2e-4)
    assert head.l2 == pytest.approx(1 / (90 * 0.316)) and head.config()["C"] == 0.316
    with pytest.raises(ValueError):
        make_head("linear", C=1.0, l2=0.1)


def test_code_defaults_to_its_published_heads():
    from dataclasses import replace

    from fakescope.training.trained_embedding import inner_head_options, parse_trained_options
    code = parse_trained_options("code", {})
    assert code.head == "knn" and inner_head_options("code", code) == {"k": 1}
    assert inner_head_options("code", replace(code, head="logistic")) == {"C": 0.316, "standardize": False}
    assert inner_head_options("code", replace(code, head="logistic", C="sweep")) == {}
    assert inner_head_options("code", replace(code, head="ocsvm-poly")) == {"nu": 0.1}
    nt = parse_trained_options("natural-traces", {"head": "knn"})
    assert inner_head_options("natural-traces", nt) == {"k": 10}
    assert inner_head_options("natural-traces", replace(nt, head="logistic")) == {}


def test_recipe_options_are_typed():
    # --set values arrive as JSON or text; each recipe reads them as its dataclass's field types
    from fakescope.training.trained_embedding import parse_trained_options
    from fakescope.training.lowlevel import parse_options
    o = parse_trained_options("code", {"epochs": "3", "image_term": "false", "C": "0.5", "global_scale": [0.5, 1]})
    assert (o.epochs, o.image_term, o.C, o.global_scale, o.stage1_epochs) == (3, False, 0.5, (0.5, 1.0), 1)
    assert parse_trained_options("code", {"C": "sweep"}).C == "sweep"
    low = parse_options({"thumbnail": "true", "resume": 0, "jpeg_quality": [50, 90], "head_l2": 1})
    assert (low.thumbnail, low.resume, low.jpeg_quality, low.head_l2) == (True, False, (50, 90), 1.0)
    with pytest.raises(ValueError, match="--method natural-traces: unknown option.*'epoch'.*known: .*epochs"):
        parse_trained_options("natural-traces", {"epoch": 3})
    with pytest.raises(ValueError, match="option resume must be true or false"):
        parse_options({"resume": "maybe"})
    with pytest.raises(ValueError, match="option epochs must be int"):
        parse_options({"epochs": "many"})
