"""The small autoencoder whose decoder re-synthesises edited regions: a real decoder fingerprint,
like latent-diffusion inpainting leaves. Trained by `fakescope train-autoencoder`; saved as
safetensors + JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .common import _as_rgb_array

AUTOENCODER_FORMAT = "fakescope-tiny-autoencoder"
AUTOENCODER_CONFIG = "config.json"
AUTOENCODER_WEIGHTS = "model.safetensors"


class TinyAutoencoder(nn.Module):
    """A small convolutional autoencoder with a latent at 1/8 resolution, the shape of the
    latent-diffusion VAEs (SD: 4 channels at 1/8) at a tiny fraction of their size.

    Encoder: 3x3 conv, then three 4x4 stride-2 convs (1/2, 1/4, 1/8), then a 1x1 conv to
    `latent_channels`. Decoder: 3x3 conv, three (x2 upsample + 3x3 conv) stages and a final 3x3
    conv to RGB. `upsample="nearest"` is nearest-neighbour upsampling followed by a conv, as in the
    SD VAE decoder; `"transposed"` uses 4x4 stride-2 transposed convs (checkerboard-prone). SiLU
    activations, no normalisation (outputs do not depend on what else is in the batch).
    Pixels are in [-1, 1]; `reconstruct` takes and returns uint8 images.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 96), latent_channels: int = 8,
                 upsample: str = "nearest"):
        super().__init__()
        if len(channels) != 3:
            raise ValueError("channels must list 3 widths (one per resolution level)")
        if upsample not in ("nearest", "transposed"):
            raise ValueError("upsample must be 'nearest' or 'transposed'")
        c0, c1, c2 = (int(c) for c in channels)
        self.config = {"channels": [c0, c1, c2], "latent_channels": int(latent_channels), "upsample": upsample}
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1), act(),
            nn.Conv2d(c0, c0, 4, stride=2, padding=1), act(),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),
            nn.Conv2d(c2, int(latent_channels), 1),
        )

        def up(cin, cout):
            if upsample == "transposed":
                return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), act()]
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), act()]

        self.decoder = nn.Sequential(
            nn.Conv2d(int(latent_channels), c2, 3, padding=1), act(),
            *up(c2, c1), *up(c1, c0), *up(c0, c0),
            nn.Conv2d(c0, 3, 3, padding=1),
        )

    def encode(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.encoder(x)

    def decode(self, z: "torch.Tensor") -> "torch.Tensor":
        return self.decoder(z)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.decode(self.encode(x))

    @torch.no_grad()
    def reconstruct(self, img: np.ndarray, latent_noise: float = 0.0, latent_mask: np.ndarray | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 HxWx3 -> its uint8 HxWx3 reconstruction. The image is reflect-padded by 8 pixels
        and up to a multiple of 8 (so borders have context), then cropped back. `latent_noise` adds
        Gaussian noise of that many latent standard deviations (where `latent_mask` at the image's
        resolution is set, everywhere when None), drawn from `rng`: new content, same decoder."""
        h, w = img.shape[:2]
        pad_b, pad_r = 8 + (-(h + 16)) % 8, 8 + (-(w + 16)) % 8
        mode = "reflect" if min(h, w) > 8 else "edge"
        x = np.pad(img, ((8, pad_b), (8, pad_r), (0, 0)), mode=mode)
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        was_training = self.training
        self.eval()
        try:
            z = self.encode(t)
            if latent_noise > 0:
                if rng is None:
                    raise ValueError("latent_noise needs an rng")
                eps = torch.from_numpy(rng.standard_normal(tuple(z.shape)).astype(np.float32))
                if latent_mask is not None:
                    lm = np.pad((np.asarray(latent_mask) > 0).astype(np.float32), ((8, pad_b), (8, pad_r)))
                    lm_t = torch.from_numpy(lm)[None, None]
                    lm_t = torch.nn.functional.adaptive_max_pool2d(lm_t, tuple(z.shape[-2:]))
                    eps = eps * lm_t
                z = z + latent_noise * z.std() * eps
            y = self.decode(z)
        finally:
            self.train(was_training)
        y = ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
        return np.ascontiguousarray(y[8:8 + h, 8:8 + w])


def _gradient_l1(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def train_autoencoder(images: Iterable, steps: int = 2000, batch_size: int = 16, crop: int = 128,
                      lr: float = 1e-3, seed: int = 0, grad_weight: float = 0.5,
                      channels: Sequence[int] = (32, 64, 96), latent_channels: int = 8,
                      upsample: str = "nearest", history: list | None = None,
                      on_step: Callable[[int, float], None] | None = None) -> TinyAutoencoder:
    """Train a TinyAutoencoder to reconstruct random crops of `images` (PIL images or uint8 HxWx3
    arrays; all are held in memory). Loss: L1 on pixels + `grad_weight` x L1 on horizontal and
    vertical pixel differences (keeps edges sharper than L1 alone). Random `crop`x`crop` crops
    (images smaller than the crop are first upscaled, bicubic) with random horizontal flips; Adam.

    Seeded: the weights' init (torch, in a forked RNG: the global torch RNG is left as it was) and
    the crops (numpy) come from `seed`. The per-step loss is appended to `history` when given and
    passed to `on_step(step, loss)`. Returns the model in eval mode."""
    if crop % 8 or crop < 8:
        raise ValueError("crop must be a positive multiple of 8")
    pool = []
    for im in images:
        a = _as_rgb_array(im)
        h, w = a.shape[:2]
        if min(h, w) < crop:
            f = crop / min(h, w)
            a = np.asarray(Image.fromarray(a).resize((max(crop, round(w * f)), max(crop, round(h * f))),
                                                     Image.BICUBIC))
        pool.append(a)
    if not pool:
        raise ValueError("no images to train the autoencoder on")
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyAutoencoder(channels, latent_channels, upsample)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(int(steps)):
        batch = np.empty((batch_size, crop, crop, 3), np.uint8)
        for i in range(batch_size):
            a = pool[int(rng.integers(len(pool)))]
            y0 = int(rng.integers(0, a.shape[0] - crop + 1))
            x0 = int(rng.integers(0, a.shape[1] - crop + 1))
            c = a[y0:y0 + crop, x0:x0 + crop]
            batch[i] = c[:, ::-1] if rng.random() < 0.5 else c
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = model(x)
        loss = (y - x).abs().mean()
        if grad_weight:
            loss = loss + grad_weight * _gradient_l1(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if history is not None:
            history.append(value)
        if on_step is not None:
            on_step(step, value)
    return model.eval()


def save_autoencoder(model: TinyAutoencoder, directory: str | os.PathLike) -> Path:
    """Write `config.json` + `model.safetensors` (tensors only, no pickle) into `directory`."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / AUTOENCODER_WEIGHTS))
    (d / AUTOENCODER_CONFIG).write_text(json.dumps({"format": AUTOENCODER_FORMAT, "version": 1, **model.config},
                                                   indent=2) + "\n")
    return d


def load_autoencoder(directory: str | os.PathLike) -> TinyAutoencoder:
    """The TinyAutoencoder saved in `directory` by `save_autoencoder`, in eval mode (strict load)."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path, w_path = d / AUTOENCODER_CONFIG, d / AUTOENCODER_WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"{d}: no trained autoencoder here (expected {AUTOENCODER_CONFIG} and "
                                f"{AUTOENCODER_WEIGHTS}, written by save_autoencoder)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != AUTOENCODER_FORMAT:
        raise ValueError(f"{cfg_path}: not a {AUTOENCODER_FORMAT} config")
    model = TinyAutoencoder(cfg["channels"], cfg["latent_channels"], cfg.get("upsample", "nearest"))
    model.load_state_dict(load_file(str(w_path)), strict=True)
    return model.eval()


def default_autoencoder_dir() -> Path:
    """Where the packaged autoencoder lives: `fakescope/models/autoencoder` inside the installed
    package. It may not exist yet (train one and `save_autoencoder` it there)."""
    return Path(__file__).resolve().parents[2] / "models" / "autoencoder"


