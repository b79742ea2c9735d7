"""`fakescope train --method lowlevel`: an expert on generator traces, trained from scratch.

Content and format are the shortcuts a detector on semantic features takes (small web photo ->
real, art prompt -> fake). This expert is built not to see them: an NPR residual (encoders.py
`LowLevelCNN`) of small native-resolution crops, never resized for the network, with the same
flips, quarter turns, blur, resizing and JPEG q30-100 drawn for both classes (views.py
`native_view`). It is trained with binary cross-entropy through the engine (1 or N processes).

The trained encoder is then a frozen backbone like any other (`trained:<dir>`, which reads a
larger native centre crop as tiles of the training crop and averages their embeddings), and the
detector is the usual linear head on it, fitted and thresholded by `fit_detector` (handed to the recipe): one
threshold rule, one metadata record, one saved-model format for every method.

    thumbnail=true   the whole image squashed to the crop size instead (an expert for images too
                     small to crop, such as CIFAKE's 32 px ones: preset npr-tiny)
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import parse_spec
from ..backbones.encoders import LOWLEVEL_PRESETS, LowLevelCNN, LowLevelConfig, count_parameters, save_encoder
from . import engine
from .common import held_out_split, training_samples
from .data import NativeCrops
from .methods import register_recipe
from .options import typed_options
from .views import NativeViewConfig

@dataclass(frozen=True)
class LowLevelOptions:
    """`--set` options of --method lowlevel (all optional; parse_options)."""
    encoder: str = "npr-small"     # npr-small (64 px native crops) | npr-tiny (32 px thumbnails)
    thumbnail: bool = False        # squash whole images to the crop size instead of cropping (small-image expert)
    residual: bool = True          # false: the CNN reads pixels, not the NPR residual (ablation)
    width: int | None = None       # preset overrides: channels of the first stage,
    image_size: int | None = None  #   training crop side,
    stages: int | None = None      #   residual stages (each halves the resolution, doubles the width)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    region: int = 256              # native square kept per training image (memory: 256 px = 200 KB)
    eval_size: int | None = None   # side of the native centre crop the detector reads (default 3x the crop),
                                   #   read as tiles of the crop size whose embeddings are averaged
    jpeg_quality: tuple[int, ...] = (30, 100)   # JPEG re-compression range drawn for both classes
    min_side: int | None = None    # train only on images at least this large (default: the crop size; 0 for thumbnail)
    run_dir: str | None = None     # checkpoints + metrics.jsonl + the encoder (default: a temporary folder)
    resume: bool = True
    max_minutes: float | None = None   # time budget for training (stops with a checkpoint; the head is still fitted)
    workers: int = 2
    threads: int | None = None
    head_l2: float | None = None   # the linear head's l2 (default: the linear head's own sweep)


class WithLogit(nn.Module):
    """The encoder and a linear real/fake logit on its embedding (used for training only)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.logit = nn.Linear(encoder.out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.encoder(x)).squeeze(1)


def bce_objective(model, batch, ctx: engine.StepContext):
    logits = model(batch["global"])
    loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"].float())
    acc = ((logits > 0).long() == batch["label"]).float().mean()
    return loss, {"accuracy": float(acc)}


def parse_options(opts: dict) -> LowLevelOptions:
    o = typed_options(LowLevelOptions, opts, "--method lowlevel")
    if o.encoder not in LOWLEVEL_PRESETS:
        raise ValueError(f"encoder {o.encoder!r} unknown; choose from {', '.join(LOWLEVEL_PRESETS)}")
    return o


def lowlevel_config(o: LowLevelOptions) -> LowLevelConfig:
    cfg = replace(LOWLEVEL_PRESETS[o.encoder], residual=o.residual)
    over = {k: getattr(o, k) for k in ("width", "image_size", "stages") if getattr(o, k)}
    return replace(cfg, **over)


def train_encoder(samples, o: LowLevelOptions, seed: int = 0, log=print) -> tuple[LowLevelCNN, dict]:
    """Train the CNN on `samples` (labelled); returns it (eval mode, CPU) and a training record."""
    t0 = time.time()
    if o.threads:
        torch.set_num_threads(o.threads)
    cfg = lowlevel_config(o)
    min_side = o.min_side if o.min_side is not None else (0 if o.thumbnail else cfg.image_size)
    view = NativeViewConfig(size=cfg.image_size, jpeg_quality=o.jpeg_quality)
    data = NativeCrops(samples, view, o.region, seed, o.workers, thumbnail=o.thumbnail,
                       min_side=min_side)
    if data.too_small:
        log(f"lowlevel: {data.too_small} images under {min_side} px left out of training")
    if data.unreadable:
        log(f"lowlevel: {data.unreadable} unreadable images left out of training")
    if len(set(data.labels.tolist())) < 2:
        raise ValueError("lowlevel: training needs real and fake images large enough to crop "
                         f"({min_side} px or more); set min_side=0 or thumbnail=true for small images")
    torch.manual_seed(seed)
    encoder = LowLevelCNN(cfg)
    model = WithLogit(encoder)
    n = len(data)
    B = engine.global_batch_size(n, o.batch_size, 1)
    steps = max(1, (n // B) * o.epochs)
    loop = engine.TrainLoopConfig(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                                  weight_decay=o.weight_decay, warmup_steps=int(0.05 * steps), seed=seed,
                                  out_dir=o.run_dir, resume=o.resume, checkpoint_every=50,
                                  max_seconds=60 * o.max_minutes if o.max_minutes else None,
                                  workers=o.workers, desc="lowlevel")
    history = engine.run(model, bce_objective, data, loop, log=log)
    record = {"encoder_parameters": count_parameters(encoder), "images": n, "left_out_small": data.too_small,
              "view": asdict(view), "history": history, "loop": asdict(loop),
              "train_seconds": round(time.time() - t0, 1)}
    return encoder.cpu().eval(), record


@register_recipe("lowlevel")
def fit_lowlevel_detector(cfg, samples, log, fit_detector):
    """cfg: a fit.TrainConfig with method lowlevel (options in head_options). Trains the encoder on
    the training split, saves it, then fits the linear head on it through `fit_detector`
    (fit.fit_detector, handed in: methods.py)."""
    o = parse_options(dict(cfg.head_options))
    samples = training_samples(cfg, samples)
    train, _ = held_out_split(cfg, samples)
    encoder, record = train_encoder(train, o, cfg.seed, log)
    run_dir = Path(o.run_dir or tempfile.mkdtemp(prefix="fakescope-lowlevel-"))
    size = encoder.cfg.image_size
    eval_size = int(o.eval_size or (size if o.thumbnail else 3 * size))
    # a thumbnail expert squashes whole images: large JPEGs are decoded at reduced DCT scale, at least
    # twice its input (PIL's thumbnail rule), so images under 4x its input decode exactly in full
    read = "resize=resize&draft=2" if o.thumbnail else "resize=native_crop"
    enc_dir = save_encoder(run_dir / "encoder", encoder, asdict(parse_spec(f"pixels?size={eval_size}&{read}")),
                           {"recipe": "lowlevel", "training": {k: v for k, v in record.items() if k != "history"}})
    head = {"l2": o.head_l2} if o.head_l2 is not None else {}
    det = fit_detector(replace(cfg, backbone=f"trained:{enc_dir}", method="linear", head_options=head,
                               views=1), samples, log=log)
    det.metadata["recipe"] = "lowlevel"
    det.metadata["lowlevel"] = {"options": {k: v for k, v in asdict(o).items() if k != "run_dir"}, **record}
    return det


__all__ = ["LowLevelOptions", "fit_lowlevel_detector", "parse_options", "train_encoder"]
