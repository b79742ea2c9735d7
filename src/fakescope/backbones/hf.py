"""Vision towers from Hugging Face transformers, loaded with the real `from_pretrained`.

    hf-clip:<hub id or dir>     CLIPVisionModelWithProjection; pooled = image_embeds (projected, as UnivFD)
    hf-siglip:<hub id or dir>   SiglipVisionModel;             pooled = pooler_output (attention-pool head)
    hf-dinov2:<hub id or dir>   Dinov2Model (or Dinov2WithRegistersModel); pooled = pooler_output
                                (CLS token after the final layernorm)

A directory or hub id of the full two-tower checkpoint (CLIPModel, SiglipModel) works too:
only the vision weights are used.

Layer convention (`?layers=...`): index k >= 1 is the output of transformer block k
(1-based), i.e. `hidden_states[k]` of transformers (`hidden_states[0]` is the embedding
output and is not addressable). Negative k counts from the end: -1 is the last block,
before any final layernorm. Each layer gives one (N, D) vector per image: the class token,
or the mean of all tokens for SigLIP, which has no class token.

Patches (`want_patches=True`) are the tokens of `last_hidden_state` without the class and
register tokens, as an (N, h, w, C) grid, h = H / patch_size. With `?patch_layer=k` they
come from `hidden_states[k]` instead (same indexing as `layers`; no final layernorm).

Building a spec never touches the network: the sizes, mean/std and embedding dimension
come from config.json / preprocessor_config.json of a local directory or of the local hub
cache, otherwise from the family defaults (dim 0 then, filled in at load). Loading honours
HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as set at call time (not only at import).
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import register
from .spec import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, Features, compute_device


@dataclass(frozen=True)
class _Family:
    key: str                         # registry prefix
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_size: int
    cls_token: bool                  # False: SigLIP, layers are token means


_FAMILIES = {
    "hf-clip:": _Family("hf-clip:", CLIP_MEAN, CLIP_STD, 224, True),
    "hf-siglip:": _Family("hf-siglip:", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224, False),
    "hf-dinov2:": _Family("hf-dinov2:", IMAGENET_MEAN, IMAGENET_STD, 224, True),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _is_local(ref: str) -> bool:
    """A directory, or something that can only be meant as a path (then it must exist)."""
    if os.path.isdir(ref):
        return True
    if os.path.exists(ref):
        raise ValueError(f"{ref!r} is a file; give the model directory (with config.json)")
    if ref.startswith(("/", ".", "~")) or "\\" in ref or not _HUB_ID.match(ref):
        raise FileNotFoundError(f"model directory {ref!r} does not exist")
    return False


def _config_files(ref: str) -> tuple[dict | None, dict | None]:
    """(config.json, preprocessor_config.json) as dicts, from the directory or the hub cache only."""
    if _is_local(ref):
        root = Path(ref)
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"{ref!r} has no config.json: not a transformers model directory")
        paths = [root / "config.json", root / "preprocessor_config.json"]
    else:
        from huggingface_hub import try_to_load_from_cache
        paths = []
        for name in ("config.json", "preprocessor_config.json"):
            try:
                found = try_to_load_from_cache(ref, name)
            except Exception:  # malformed id etc.: leave it to from_pretrained to complain
                found = None
            paths.append(Path(found) if isinstance(found, str) else None)
    out = []
    for p in paths:
        out.append(json.loads(p.read_text()) if p is not None and p.is_file() else None)
    return out[0], out[1]


def _processor_size(pre: dict) -> int | None:
    for key in (("crop_size",) if pre.get("do_center_crop", True) else ()) + ("size",):
        v = pre.get(key)
        if isinstance(v, int):
            return v
        if isinstance(v, dict):
            for k in ("height", "shortest_edge"):
                if isinstance(v.get(k), int):
                    return v[k]
    return None


def _dims(key: str, cfg: dict) -> tuple[int, int | None]:
    """(embedding dim, native image size) from a config.json dict (two-tower or vision-only)."""
    vis = cfg.get("vision_config") or cfg
    if key == "hf-clip:":  # a two-tower config's top-level projection_dim wins (see _load)
        dim = cfg.get("projection_dim", vis.get("projection_dim", 512))
    else:
        dim = vis.get("hidden_size", 768)
    size = vis.get("image_size", 224) if key != "hf-dinov2:" else None  # DINOv2 config says 518; eval is 224
    return int(dim), size


def _make_spec(family: _Family, ref: str) -> BackboneSpec:
    cfg, pre = _config_files(ref)
    dim, size = _dims(family.key, cfg) if cfg is not None else (0, None)
    pre = pre or {}
    return BackboneSpec(
        name=family.key + ref, kind=family.key, weights=ref,
        input_size=_processor_size(pre) or size or family.default_size,
        resize="resize_crop",
        mean=tuple(float(x) for x in pre.get("image_mean", family.mean)),
        std=tuple(float(x) for x in pre.get("image_std", family.std)),
        dim=dim,
    )


class HFVisionBackbone:
    def __init__(self, spec: BackboneSpec, model, family: _Family, prefix_tokens: int, pooled_attr: str):
        self.model = model
        self.family = family
        self.prefix_tokens = prefix_tokens          # class + register tokens before the patches
        self.pooled_attr = pooled_attr
        self.num_layers = int(model.config.num_hidden_layers)
        self.image_size = int(getattr(model.config, "image_size", 0) or 0)
        self.patch_size = int(model.config.patch_size)
        for k in spec.layers + ((spec.patch_layer,) if spec.patch_layer is not None else ()):
            if k == 0 or abs(k) > self.num_layers:
                raise ValueError(f"{spec.name}: layer {k} not available "
                                 f"(blocks 1..{self.num_layers}, or -1..-{self.num_layers})")
        self.spec = spec

    def _hidden(self, out, k: int):
        return out.hidden_states[k if k > 0 else self.num_layers + 1 + k]

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.model.device)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch, got {tuple(x.shape)}")
        kwargs: dict = {}
        patch_layer = self.spec.patch_layer if want_patches else None
        if self.spec.layers or patch_layer is not None:
            kwargs["output_hidden_states"] = True
        if self.family.key != "hf-dinov2:" and tuple(x.shape[2:]) != (self.image_size, self.image_size):
            kwargs["interpolate_pos_encoding"] = True  # DINOv2 always interpolates
        with torch.inference_mode():
            out = self.model(pixel_values=x, **kwargs)
            feats = Features(pooled=_np(getattr(out, self.pooled_attr)))
            if want_patches:
                h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
                seq = out.last_hidden_state if patch_layer is None else self._hidden(out, patch_layer)
                tokens = seq[:, self.prefix_tokens:]
                feats.patches = _np(tokens.reshape(tokens.shape[0], h, w, tokens.shape[-1]))
            for k in self.spec.layers:
                hs = self._hidden(out, k)
                feats.layers[k] = _np(hs[:, 0] if self.family.cls_token else hs.mean(dim=1))
        return feats


def _np(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


@contextmanager
def _quiet_transformers():
    """transformers 5 logs a table of every checkpoint key it does not use (the whole text tower
    of a CLIPModel checkpoint) as a warning; missing keys are checked by the caller instead."""
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        tf_logging.set_verbosity(level)


def _load(family: _Family, spec: BackboneSpec) -> HFVisionBackbone:
    import torch  # imported here, not at module level, to keep registration cheap
    import transformers as tf

    ref = spec.weights
    local = _is_local(ref)
    kw = {"local_files_only": True} if (local or _offline()) else {}
    base_config = getattr(tf, "PreTrainedConfig", None) or tf.PretrainedConfig  # renamed in transformers 5
    raw, _ = base_config.get_config_dict(ref, **kw)
    prefix, pooled_attr = 1, "pooler_output"
    if family.key == "hf-clip:":
        cls, pooled_attr = tf.CLIPVisionModelWithProjection, "image_embeds"
        config = tf.CLIPVisionConfig.from_pretrained(ref, **kw)
        if "vision_config" in raw and "projection_dim" in raw:
            # transformers 5 writes the default 512 into vision_config of a two-tower
            # CLIPConfig; the projection actually has the top-level projection_dim.
            config.projection_dim = raw["projection_dim"]
    elif family.key == "hf-siglip:":
        cls, prefix = tf.SiglipVisionModel, 0
        config = tf.SiglipVisionConfig.from_pretrained(ref, **kw)
    else:
        if raw.get("model_type") == "dinov2_with_registers":
            cls, config_cls = tf.Dinov2WithRegistersModel, tf.Dinov2WithRegistersConfig
        else:
            cls, config_cls = tf.Dinov2Model, tf.Dinov2Config
        config = config_cls.from_pretrained(ref, **kw)
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    with _quiet_transformers():
        # A local directory may have been named by a model folder (data): tensors only, never a pickle.
        safe = {"use_safetensors": True} if local else {}
        model, info = cls.from_pretrained(ref, config=config, dtype=torch.float32, output_loading_info=True,
                                          **safe, **kw)
    missing = list(info.get("missing_keys") or [])
    if missing:  # randomly initialised weights would give meaningless features
        raise ValueError(f"{spec.name}: checkpoint lacks weights for {cls.__name__}: {sorted(missing)[:5]}...")
    model = model.to(compute_device(), dtype=torch.float32).eval()
    real_dim = int(config.projection_dim if family.key == "hf-clip:" else config.hidden_size)
    if spec.dim and spec.dim != real_dim:
        raise ValueError(f"{spec.name}: spec says dim {spec.dim}, model has {real_dim}")
    return HFVisionBackbone(replace(spec, dim=real_dim), model, family, prefix, pooled_attr)


def _registrar(family: _Family):
    return (lambda ref: _make_spec(family, ref)), (lambda spec: _load(family, spec))


for _key, _family in _FAMILIES.items():
    register(_key, *_registrar(_family))
