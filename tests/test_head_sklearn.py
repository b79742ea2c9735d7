"""The scikit-learn shape of the heads: fit(X, y), predict_proba (n x 2), decision_function,
classes_, and the head alone saved as JSON + safetensors."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from fakescope.heads import SklearnShape, methods  # noqa: E402
from fakescope.heads.linear import LinearProbe  # noqa: E402


def data(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def test_every_registered_head_has_the_shape():
    from fakescope.heads import head_class
    for m in methods():
        cls = head_class(m)
        for name in ("predict_proba", "decision_function", "save", "load", "classes_"):
            assert hasattr(cls, name), (m, name)
    for name in ("predict_proba", "decision_function"):
        assert getattr(LinearProbe, name) is getattr(SklearnShape, name)


def test_every_registered_head_declares_its_capabilities():
    # what training and the detector ask a head (the Head protocol), never found by hasattr
    from fakescope.heads import head_class
    flags = {m: {f for f in ("reads_text", "needs_blocks", "trains_encoder") if getattr(head_class(m), f)}
             for m in methods()}
    assert {m: f for m, f in flags.items() if f} == {"disentangle": {"reads_text"}, "multilayer": {"needs_blocks"},
                                                     "code": {"trains_encoder"}, "natural-traces": {"trains_encoder"}}
    for m in methods():
        cls = head_class(m)
        assert callable(cls.from_state) and callable(cls.analysis) and callable(cls.uncertainty_input), m
    X, y = data()
    head = LinearProbe(seed=0)
    head.fit(X, y)
    p, experts = head.predict_with_experts(X)
    np.testing.assert_array_equal(p, head.predict(X))
    assert experts is None and head.analysis(X, y) is None and head.uncertainty_input(X) is X


def test_linear_probe_like_a_sklearn_classifier(tmp_path):
    X, y = data()
    head = LinearProbe(seed=0)
    head.fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba[:, 1], head.predict(X), rtol=1e-6)
    margin = head.decision_function(X)
    assert margin.shape == (len(X),) and np.array_equal(margin > 0, proba[:, 1] > 0.5)
    assert list(head.classes_) == [0, 1]
    labels = head.classes_[proba.argmax(1)]
    assert (labels == y).mean() > 0.85  # it learned the separable feature
    sklearn = pytest.importorskip("sklearn.metrics")
    assert sklearn.roc_auc_score(y, margin) == pytest.approx(sklearn.roc_auc_score(y, proba[:, 1]))

    folder = head.save(tmp_path / "head")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "head.json", "head.safetensors"]
    again = LinearProbe.load(folder)
    np.testing.assert_array_equal(again.predict_proba(X), proba)


def test_load_refuses_a_foreign_folder(tmp_path):
    from fakescope.errors import ModelFolderError
    (tmp_path / "head.json").write_text('{"format": "fakescope.head/1", "method": "nope", "config": {}}')
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "head.safetensors"))
    with pytest.raises(ModelFolderError, match="broken head"):
        LinearProbe.load(tmp_path)
