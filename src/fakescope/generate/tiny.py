"""Tiny random Stable Diffusion pipelines, built from small configs and saved to a folder.

They make noise, not pictures: they exist so the dataset builder (and its tests) can run the
real `from_pretrained` loading path, batching, seeding and writing offline on a CPU in seconds,
the way diffusers' own tests do (a tiny UNet, VAE and CLIP text encoder; a byte-level CLIP BPE
tokenizer written here from a vocab.json and merges.txt, no hub download).

    python -m fakescope.generate.tiny DIR        # DIR/tiny-sd (text-to-image), DIR/tiny-sd-inpaint

then `fakescope build fakes --generator tiny=DIR/tiny-sd?steps=2 ...`.

Sizes: the VAE downsamples by 2 and the UNet by 2 more, so width and height must be multiples
of 4; the default output is 32x32 (UNet sample_size 16).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# A few merges so that common words are more than single bytes (any BPE needs none to work).
_MERGES = ["p h", "o t", "ph ot", "ph o</w>", "c a", "ca t</w>", "d o", "do g</w>", "t h", "th e</w>"]


def write_clip_tokenizer_files(directory: str | os.PathLike) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a tiny byte-level CLIP BPE: the two special tokens, the 256
    byte symbols with and without the end-of-word suffix, and the merges above."""
    from tokenizers.pre_tokenizers import ByteLevel

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = sorted(ByteLevel.alphabet())
    for c in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(c, len(vocab))
    for merge in _MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return d / "vocab.json", d / "merges.txt"


def tiny_clip_tokenizer(directory: str | os.PathLike):
    import inspect

    import transformers as tf

    vocab, merges = write_clip_tokenizer_files(directory)
    params = inspect.signature(tf.CLIPTokenizer.__init__).parameters
    if "vocab_file" in params:  # transformers 4.x
        return tf.CLIPTokenizer(vocab_file=str(vocab), merges_file=str(merges), model_max_length=77)
    return tf.CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=77)


def tiny_components(in_channels: int = 4, seed: int = 0, work_dir: str | os.PathLike | None = None) -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler (DDIM) of a tiny SD pipeline; in_channels=9
    gives the inpainting UNet (latents + mask + masked-image latents)."""
    import tempfile

    import torch
    import transformers as tf
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])
    torch.manual_seed(seed + 2)
    text_encoder = tf.CLIPTextModel(tf.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77, vocab_size=600,
        layer_norm_eps=1e-5))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(work_dir or tmp)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer, "scheduler": scheduler}


def save_tiny_pipeline(directory: str | os.PathLike, kind: str = "text2img", seed: int = 0) -> Path:
    """Build a tiny StableDiffusionPipeline (kind="text2img") or StableDiffusionInpaintPipeline
    (kind="inpaint") and `save_pretrained` it to `directory`; returns the folder."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    if kind not in ("text2img", "inpaint"):
        raise ValueError("kind must be text2img or inpaint")
    cls = StableDiffusionInpaintPipeline if kind == "inpaint" else StableDiffusionPipeline
    comps = tiny_components(in_channels=9 if kind == "inpaint" else 4, seed=seed)
    pipe = cls(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = Path(directory)
    from .pipelines import _quiet_loading

    with _quiet_loading():
        pipe.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m fakescope.generate.tiny DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    for kind, name in (("text2img", "tiny-sd"), ("inpaint", "tiny-sd-inpaint")):
        print(save_tiny_pipeline(root / name, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
