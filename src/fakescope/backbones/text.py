"""CLIP text tower: prompts -> text_embeds, in the space of `hf-clip:<same ref>` image_embeds.

    enc = load_text_encoder("hf-clip-text:openai/clip-vit-large-patch14")   # or a local dir
    enc.encode(["a photo", "an AI-generated image"])  -> (2, D) float32, not normalised
"""
from __future__ import annotations

import numpy as np

from .hf import _is_local, _offline, _quiet_transformers

PREFIX = "hf-clip-text:"


class CLIPTextEncoder:
    def __init__(self, ref: str, model, tokenizer):
        self.ref, self.model, self.tokenizer = ref, model, tokenizer
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.max_position_embeddings)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tok = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                emb = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text_embeds
                out.append(emb.float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def load_text_encoder(ref: str) -> CLIPTextEncoder:
    """ref: 'hf-clip-text:<hub id or dir>' or just the hub id / dir (CLIPModel or CLIPTextModelWithProjection)."""
    import torch
    import transformers as tf

    ref = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
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
        raise ValueError(f"{PREFIX}{ref}: checkpoint lacks text weights: {sorted(info['missing_keys'])[:5]}...")
    tokenizer = tf.AutoTokenizer.from_pretrained(ref, **kw)
    return CLIPTextEncoder(ref, model.to("cpu").eval(), tokenizer)
