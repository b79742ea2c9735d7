"""Shared fixtures: tiny random models saved to disk, loaded through the real loaders."""
from __future__ import annotations

import inspect
import json
import os

import pytest

# One compute thread per test process (torch, OpenMP, our ONNX sessions), set before any of them
# starts: the suite runs one test at a time, and on a small shared machine thread pools spin
# against each other (test_methods.py: 78 -> 40 s wall). Export another value to override.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FAKESCOPE_THREADS"):
    os.environ.setdefault(_var, "1")

WORDS = ["a", "the", "of", "photo", "picture", "dog", "cat", "car", "red", "art", "painting", "highly",
         "detailed", "cinematic", "lighting", "trending", "on", "artstation", "8k", "render", "portrait",
         "fantasy", "landscape", ",", "##s", "##ing"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1: the tiny models must load through the local-directory path, never the hub."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture
def picky_backbone():
    """make(real, poison): `real`, except that a forward on any batch holding the array `poison`
    raises RuntimeError("cannot take this input"), a model that cannot take one image."""
    import numpy as np

    class Picky:
        def __init__(self, real, poison):
            self.real, self.poison, self.spec = real, poison, real.spec

        def forward(self, x, want_patches=False):
            if any(np.array_equal(a, self.poison) for a in x):
                raise RuntimeError("cannot take this input")
            return self.real.forward(x, want_patches)

    return Picky


@pytest.fixture(scope="module")
def one_thread():
    """One compute thread: on a busy small machine, torch/ORT thread pools spin against each other."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKESCOPE_THREADS", "1")
    yield
    mp.undo()
    torch.set_num_threads(n)


def _tokenizer(vocab_file):
    import transformers as tf

    params = inspect.signature(tf.BertTokenizerFast.__init__).parameters
    if "vocab" in params:  # transformers 5: the vocab itself (vocab_file= would be ignored)
        vocab = {t: i for i, t in enumerate(vocab_file.read_text().splitlines())}
        return tf.BertTokenizerFast(vocab=vocab)
    return tf.BertTokenizerFast(vocab_file=str(vocab_file))


@pytest.fixture(scope="session")
def tiny_sentence_encoder(tmp_path_factory):
    """(dir, model, tokenizer): a random 2-layer BERT saved as a sentence-transformers folder
    (mean pooling + Normalize), loadable offline as the text encoder `st:<dir>`."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("st")
    vocab_file = d / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    tok = _tokenizer(vocab_file)
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=37,
                                       max_position_embeddings=64)).eval()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (d / "modules.json").write_text(json.dumps(MODULES))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    return str(d), model, tok


