"""hf-clip / hf-siglip / hf-dinov2 through the registry, on tiny random checkpoints saved to disk."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from fakescope.backbones import load_backbone, parse_spec, preprocess  # noqa: E402
from fakescope.backbones.spec import CLIP_MEAN, IMAGENET_MEAN  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
            image_size=32, patch_size=8)
N = 2


def _save(tmp_path_factory, name, model, processor: dict | None = None) -> str:
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    if processor is not None:
        (d / "preprocessor_config.json").write_text(json.dumps(processor))
    return str(d)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**TINY, projection_dim=16)).eval()
    return _save(tmp_path_factory, "clip", model,
                 {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
                  "image_mean": list(CLIP_MEAN), "image_std": [0.26862954, 0.26130258, 0.27577711]}), model


@pytest.fixture(scope="module")
def clip_full_dir(tmp_path_factory):
    """A two-tower CLIPModel checkpoint, as hub ids like openai/clip-vit-large-patch14 are."""
    torch.manual_seed(1)
    cfg = tf.CLIPConfig(vision_config=TINY, projection_dim=16,
                        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=99, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1))
    model = tf.CLIPModel(cfg).eval()
    return _save(tmp_path_factory, "clipfull", model), model


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY)).eval()
    return _save(tmp_path_factory, "siglip", model), model


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval()
    return _save(tmp_path_factory, "dino", model,
                 {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
                  "image_mean": list(IMAGENET_MEAN), "image_std": [0.229, 0.224, 0.225]}), model


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((N, 3, 32, 32)).astype(np.float32)


def _direct(model, batch, **kw):
    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(batch), **kw)


def test_spec_reads_directory(offline, clip_dir, siglip_dir, dino_dir):
    clip = parse_spec("hf-clip:" + clip_dir[0])
    assert (clip.kind, clip.weights, clip.input_size, clip.dim) == ("hf-clip:", clip_dir[0], 32, 16)
    assert clip.mean == CLIP_MEAN and clip.resize == "resize_crop"
    sig = parse_spec("hf-siglip:" + siglip_dir[0])  # no preprocessor config: size from config.json
    assert (sig.kind, sig.input_size, sig.dim, sig.mean) == ("hf-siglip:", 32, 32, (0.5, 0.5, 0.5))
    dino = parse_spec("hf-dinov2:" + dino_dir[0] + "?layers=1,-1&size=64")
    assert (dino.kind, dino.input_size, dino.dim, dino.layers) == ("hf-dinov2:", 64, 32, (1, -1))
    assert dino.mean == IMAGENET_MEAN


def test_clip_pooled_matches_transformers(offline, clip_dir, batch):
    path, model = clip_dir
    bb = load_backbone("hf-clip:" + path)
    feats = bb.forward(batch)
    assert feats.pooled.shape == (N, 16) and feats.pooled.dtype == np.float32
    assert feats.patches is None and feats.layers == {}
    ref = _direct(model, batch).image_embeds
    assert torch.allclose(torch.from_numpy(feats.pooled), ref, atol=1e-5)
    assert not bb.model.training and next(bb.model.parameters()).dtype == torch.float32


def test_clip_patches_and_layers(offline, clip_dir, batch):
    path, model = clip_dir
    feats = load_backbone("hf-clip:" + path + "?layers=1,-1").forward(batch, want_patches=True)
    assert feats.patches.shape == (N, 4, 4, 32)
    assert sorted(feats.layers) == [-1, 1] and all(v.shape == (N, 32) for v in feats.layers.values())
    out = _direct(model, batch, output_hidden_states=True)
    assert np.allclose(feats.patches.reshape(N, 16, 32), out.last_hidden_state[:, 1:].numpy(), atol=1e-5)
    assert np.allclose(feats.layers[1], out.hidden_states[1][:, 0].numpy(), atol=1e-5)


def test_clip_two_tower_checkpoint(offline, clip_full_dir, batch):
    path, model = clip_full_dir
    spec = parse_spec("hf-clip:" + path)
    assert spec.dim == 16 and spec.input_size == 32  # top-level projection_dim, not vision_config's stale 512
    feats = load_backbone(spec).forward(batch)
    with torch.inference_mode():
        ref = model.get_image_features(pixel_values=torch.from_numpy(batch))
    ref = getattr(ref, "pooler_output", ref)  # transformers 5 returns a model output here
    assert torch.allclose(torch.from_numpy(feats.pooled), ref, atol=1e-5)


def test_siglip(offline, siglip_dir, batch):
    path, model = siglip_dir
    feats = load_backbone("hf-siglip:" + path + "?layers=2,-1").forward(batch, want_patches=True)
    out = _direct(model, batch, output_hidden_states=True)
    assert feats.pooled.shape == (N, 32)
    assert torch.allclose(torch.from_numpy(feats.pooled), out.pooler_output, atol=1e-5)
    assert feats.patches.shape == (N, 4, 4, 32)  # no class token: all 16 tokens are patches
    assert np.allclose(feats.layers[2], out.hidden_states[2].mean(1).numpy(), atol=1e-5)
    assert np.allclose(feats.layers[-1], out.hidden_states[3].mean(1).numpy(), atol=1e-5)


def test_dinov2(offline, dino_dir, batch):
    path, model = dino_dir
    feats = load_backbone("hf-dinov2:" + path + "?layers=1,-1").forward(batch, want_patches=True)
    out = _direct(model, batch)
    assert feats.pooled.shape == (N, 32)
    assert torch.allclose(torch.from_numpy(feats.pooled), out.pooler_output, atol=1e-5)
    assert feats.patches.shape == (N, 4, 4, 32)
    assert set(feats.layers) == {1, -1} and all(v.shape == (N, 32) for v in feats.layers.values())
    # layer k = output of block k, caught independently with forward hooks
    blocks: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: blocks.__setitem__(k, o[0] if isinstance(o, tuple) else o))
             for k, layer in enumerate(model.encoder.layer, start=1)]
    try:
        _direct(model, batch)
    finally:
        for h in hooks:
            h.remove()
    assert np.allclose(feats.layers[1], blocks[1][:, 0].numpy(), atol=1e-5)
    last = blocks[3][:, 0]  # pre-layernorm last block CLS
    assert np.allclose(feats.layers[-1], last.numpy(), atol=1e-5)
    assert not np.allclose(feats.layers[-1], feats.pooled, atol=1e-3)  # pooled is after the layernorm


def test_dinov2_other_size(offline, dino_dir):
    path, _ = dino_dir
    bb = load_backbone("hf-dinov2:" + path + "?size=48")
    x = np.zeros((1, 3, 48, 48), np.float32)
    assert bb.forward(x, want_patches=True).patches.shape == (1, 6, 6, 32)


def test_bad_layer_and_option(offline, dino_dir):
    path, _ = dino_dir
    with pytest.raises(ValueError):
        parse_spec("hf-dinov2:" + path + "?bogus=1")
    with pytest.raises(ValueError):
        load_backbone("hf-dinov2:" + path + "?layers=4")
    with pytest.raises(ValueError):
        load_backbone("hf-dinov2:" + path + "?layers=0")


def test_missing_directory_or_uncached_id_fails(offline, tmp_path):
    with pytest.raises(Exception):
        load_backbone("hf-clip:" + str(tmp_path / "nope"))
    with pytest.raises(Exception):  # a directory that is not a model
        load_backbone("hf-dinov2:" + str(tmp_path))
    with pytest.raises(Exception):  # a hub id that is not cached, offline
        load_backbone("hf-siglip:fakescope-test/definitely-not-cached")


def test_preprocess_shape(offline, clip_dir):
    spec = parse_spec("hf-clip:" + clip_dir[0])
    arr = preprocess(Image.new("RGB", (50, 40), (200, 10, 10)), spec)
    assert arr.shape == (3, spec.input_size, spec.input_size) and arr.dtype == np.float32


def test_dinov2_with_registers(offline, tmp_path_factory, batch):
    torch.manual_seed(0)
    model = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)).eval()
    path = _save(tmp_path_factory, "dinoreg", model)
    feats = load_backbone("hf-dinov2:" + path).forward(batch, want_patches=True)
    out = _direct(model, batch)
    assert torch.allclose(torch.from_numpy(feats.pooled), out.pooler_output, atol=1e-5)
    assert feats.patches.shape == (N, 4, 4, 32)  # CLS and 4 registers dropped
    assert np.allclose(feats.patches.reshape(N, 16, 32), out.last_hidden_state[:, 5:].numpy(), atol=1e-5)


def test_siglip_two_tower_checkpoint(offline, tmp_path_factory, batch):
    torch.manual_seed(2)
    cfg = tf.SiglipConfig(vision_config=TINY, text_config=dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    model = tf.SiglipModel(cfg).eval()
    path = _save(tmp_path_factory, "siglipfull", model)
    assert parse_spec("hf-siglip:" + path).dim == 32
    feats = load_backbone("hf-siglip:" + path).forward(batch)
    ref = _direct(model.vision_model, batch).pooler_output
    assert torch.allclose(torch.from_numpy(feats.pooled), ref, atol=1e-5)


def test_clip_text_tower(offline, clip_full_dir):
    from fakescope.backbones.text import load_text_encoder

    path, model = clip_full_dir
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"]  # ids as in clip_full_dir
                                        + [c for c in "acdgost"] + [c + "</w>" for c in "acdgost"] + ["ca", "cat</w>"])}
    # transformers 5 tokenizers take the vocab itself (a vocab_file= argument is silently ignored)
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")])
    tok.save_pretrained(path)
    enc = load_text_encoder("hf-clip-text:" + path)
    assert enc.model.config.eos_token_id == tok.eos_token_id
    emb = enc.encode(["a cat", "a dog", "dogs"])
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    t = tok(["a cat", "a dog", "dogs"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
    ref = getattr(ref, "pooler_output", ref)
    assert torch.allclose(torch.from_numpy(emb), ref, atol=1e-5)
    assert enc.encode([]).shape == (0, 16)


def test_compute_device_follows_the_environment(monkeypatch):
    from fakescope.backbones.spec import compute_device, onnx_providers

    monkeypatch.setenv("FAKESCOPE_DEVICE", "cpu")
    assert compute_device() == "cpu" and onnx_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CPUExecutionProvider"]
    monkeypatch.setenv("FAKESCOPE_DEVICE", "auto")
    assert compute_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("FAKESCOPE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="FAKESCOPE_DEVICE"):
        compute_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("FAKESCOPE_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            compute_device()
