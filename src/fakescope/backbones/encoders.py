"""Trainable encoders: a small ViT trained from scratch, or an adapter over frozen features.

    ViT            patch embedding (a strided conv), class token, learned positions, pre-norm
                   blocks; the embedding is the final class token (LayerNorm'ed). Presets:
                   vit-tiny (ViT-Ti/16 at 224 px, what CoDE trains), vit-small32 (patch 4 at 32 px:
                   CIFAKE on a CPU), vit-crop64 (patch 8 at 64 px crops of large photos).
    LowLevelCNN    NPR-style (Tan et al., CVPR 2024): the image minus its nearest-neighbour down/up-sampled
                   copy (what up-sampling layers leave behind), read by a small residual CNN trained
                   from scratch on native-resolution crops; the embedding is its global-average-pooled
                   last stage. Presets: npr-small (64 px crops), npr-tiny (32 px thumbnails).
    FeatureAdapter a trainable MLP over a frozen registry backbone's features (standardised with
                   training statistics kept as buffers): training runs over cached features, so it
                   costs seconds, and the backbone is whatever `--backbone` spec you trust.

None has batch-dependent layers (LayerNorm / GroupNorm, no BatchNorm, no dropout), so a batch split
over processes computes exactly what one process would.

An encoder is saved as a folder `encoder.json` (kind, config, the input spec) + `encoder.safetensors`
(never pickle); `backbones/trained.py` loads such a folder as a backbone (`trained:<dir>`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ENCODER_FORMAT = "fakescope.encoder/1"


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 32      # input side in pixels
    patch: int = 4            # patch side; image_size must be a multiple
    dim: int = 128            # token width (= embedding size)
    depth: int = 4            # transformer blocks
    heads: int = 4            # attention heads (dim must divide)
    mlp_ratio: float = 2.0    # hidden width of each block's MLP, times dim


VIT_PRESETS = {
    "vit-tiny": ViTConfig(image_size=224, patch=16, dim=192, depth=12, heads=3, mlp_ratio=4.0),
    "vit-small32": ViTConfig(image_size=32, patch=4, dim=128, depth=4, heads=4, mlp_ratio=2.0),
    "vit-crop64": ViTConfig(image_size=64, patch=8, dim=128, depth=4, heads=4, mlp_ratio=2.0),
}


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    kind = "vit"

    def __init__(self, cfg: ViTConfig = VIT_PRESETS["vit-small32"]):
        super().__init__()
        if cfg.image_size % cfg.patch or cfg.dim % cfg.heads:
            raise ValueError(f"ViT: image_size must be a multiple of patch and dim of heads ({cfg})")
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + (cfg.image_size // cfg.patch) ** 2, cfg.dim))
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_dim(self) -> int:
        return self.cfg.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, dim) embedding (the final class token)."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])

    def config(self) -> dict:
        return asdict(self.cfg)


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its nearest-neighbour 2x down- then up-sampled copy: each pixel minus the top-left
    pixel of its 2x2 cell. Smooth content cancels; the correlations an up-sampling layer leaves
    between neighbouring pixels do not (NPR, "neighbouring pixel relationships")."""
    n, c, h, w = x.shape
    x = x[:, :, :h - h % 2, :w - w % 2]
    return x - x[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


@dataclass(frozen=True)
class LowLevelConfig:
    image_size: int = 64      # training crop side (native pixels); larger inputs are read as tiles of it
    width: int = 16           # channels of the first stage; doubled at each later stage
    stages: int = 3           # residual stages, each halving the resolution
    gain: float = 4.0         # scales the residual (small numbers) before the first conv
    residual: bool = True     # False: read the pixels themselves (an ablation)


LOWLEVEL_PRESETS = {
    "npr-small": LowLevelConfig(image_size=64, width=16, stages=3),   # ~78k parameters: trains in minutes on 2 cores
    "npr-tiny": LowLevelConfig(image_size=32, width=32, stages=2),    # 32 px thumbnails (CIFAKE-sized images)
}


class _ResBlock(nn.Module):
    """conv3x3(stride) -> GN -> ReLU -> conv3x3 -> GN, plus a strided 1x1 shortcut; ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(8, cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.n2(self.c2(F.relu(self.n1(self.c1(x))))) + self.short(x))


class LowLevelCNN(nn.Module):
    kind = "npr"

    def __init__(self, cfg: LowLevelConfig = LOWLEVEL_PRESETS["npr-small"]):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.GroupNorm(8, w), nn.ReLU())
        widths = [w * 2 ** i for i in range(cfg.stages)]
        self.stages = nn.Sequential(*(_ResBlock(cin, cout, 2) for cin, cout in zip([w] + widths[:-1], widths)))
        self.norm = nn.LayerNorm(widths[-1])

    @property
    def out_dim(self) -> int:
        return self.cfg.width * 2 ** (self.cfg.stages - 1)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, out_dim): the pooled last stage."""
        if self.cfg.residual:
            x = npr_residual(x) * self.cfg.gain
        return self.norm(self.stages(self.stem(x)).mean((2, 3)))

    def config(self) -> dict:
        return asdict(self.cfg)


class FeatureAdapter(nn.Module):
    """standardise -> Linear -> GELU -> Linear: a trainable projection of frozen features."""
    kind = "adapter"

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 128):
        super().__init__()
        self.in_dim, self.hidden, self._out = in_dim, hidden, out_dim
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    @property
    def out_dim(self) -> int:
        return self._out

    def set_statistics(self, X: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(np.asarray(X, np.float32).mean(0)))
        self.std.copy_(torch.from_numpy(np.asarray(X, np.float32).std(0) + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1((x - self.mean) / self.std)))

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "hidden": self.hidden, "out_dim": self._out}


def make_encoder(kind: str, config: dict) -> nn.Module:
    if kind == "vit":
        return ViT(ViTConfig(**config))
    if kind == "adapter":
        return FeatureAdapter(**config)
    if kind == "npr":
        return LowLevelCNN(LowLevelConfig(**config))
    raise ValueError(f"unknown encoder kind {kind!r}")


def vit_config(name: str, overrides: dict | None = None) -> ViTConfig:
    if name not in VIT_PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; known: {', '.join(VIT_PRESETS)}")
    base = asdict(VIT_PRESETS[name])
    base.update({k: v for k, v in (overrides or {}).items() if k in base})
    return ViTConfig(**base)


# ------------------------------------------------------------------ embedding (inference)
def tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, S, S) -> (N, T, C, size, size): the non-overlapping size x size tiles of a grid
    covering the centre of each image (S // size tiles per side)."""
    n, c, s, _ = x.shape
    k = s // size
    off = (s - k * size) // 2
    x = x[:, :, off:off + k * size, off:off + k * size]
    x = x.reshape(n, c, k, size, k, size).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, k * k, c, size, size)


@torch.inference_mode()
def embed(encoder: nn.Module, X: np.ndarray, input_shape: tuple[int, ...] | None = None,
          batch_size: int = 256) -> np.ndarray:
    """Unit-norm embeddings of the rows of X (a backbone's feature vectors).

    For a ViT or LowLevelCNN, X holds flattened pixels of `input_shape` (3, S, S); if S exceeds the encoder's
    input, the image is cut into encoder-sized tiles and the tiles' unit embeddings are averaged
    (then re-normalised): a large image is judged by all its pieces at native resolution."""
    encoder.eval()
    out = []
    X = np.asarray(X, np.float32)
    for i in range(0, len(X), batch_size):
        x = torch.from_numpy(X[i:i + batch_size])
        if isinstance(encoder, (ViT, LowLevelCNN)):
            x = x.reshape(len(x), *input_shape)
            size = encoder.cfg.image_size
            if x.shape[-1] != size:
                if x.shape[-1] < size:
                    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
                    z = F.normalize(encoder(x), dim=1)
                else:
                    t = tiles(x, size)
                    z = F.normalize(encoder(t.flatten(0, 1)), dim=1).reshape(t.shape[0], t.shape[1], -1).mean(1)
            else:
                z = encoder(x)
        else:
            z = encoder(x)
        out.append(F.normalize(z.float(), dim=1).numpy())
    dim = getattr(encoder, "out_dim", 0)
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


# ------------------------------------------------------------------ persistence
def encoder_state(encoder: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in encoder.state_dict().items()}


def encoder_from_state(kind: str, config: dict, state: dict[str, np.ndarray]) -> nn.Module:
    enc = make_encoder(kind, config)
    enc.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return enc.eval()


def save_encoder(directory: str | os.PathLike, encoder: nn.Module, input_spec: dict, extra: dict | None = None) -> Path:
    """encoder.json (kind, config, the spec of its input: `pixels` or a frozen backbone) +
    encoder.safetensors, each written atomically."""
    from ..saving import save_model_dir
    meta = {"format": ENCODER_FORMAT, "kind": encoder.kind, "config": encoder.config(), "dim": encoder.out_dim,
            "input": input_spec, **(extra or {})}
    return save_model_dir(directory, meta, "encoder.json", encoder_state(encoder), "encoder.safetensors")


def load_encoder(directory: str | os.PathLike) -> tuple[nn.Module, dict]:
    from ..saving import load_model_dir
    meta, arrays = load_model_dir(directory, "encoder.json", "encoder.safetensors", ENCODER_FORMAT,
                                  "`fakescope train --method code|natural-traces`")
    return encoder_from_state(meta["kind"], meta["config"], arrays), meta


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


__all__ = ["FeatureAdapter", "LOWLEVEL_PRESETS", "LowLevelCNN", "LowLevelConfig", "npr_residual", "VIT_PRESETS", "ViT", "ViTConfig", "count_parameters", "embed", "encoder_from_state",
           "encoder_state", "load_encoder", "make_encoder", "save_encoder", "tiles", "vit_config"]
