"""`fakescope train --method lowlevel`: an expert on generator traces, trained from scratch.

Content and format are the shortcuts a detector on semantic features takes (small web photo ->
real, art prompt -> fake). This expert is built not to see them: an NPR residual (encoders.py
`LowLevelCNN`) of small native-resolution crops, never resized for the network, with the same
flips, quarter turns, blur, resizing and JPEG q30-100 drawn for both classes (views.py
`native_view`). It is trained with binary cross-entropy through the engine (1 or N processes).

The trained encoder is then a frozen backbone like any other (`trained:<dir>`, which reads a
larger native centre crop as tiles of the training crop and averages their embeddings), and the
detector is the usual linear head on it, fitted and thresholded by `train.fit_detector` (handed to the recipe): one
threshold rule, one metadata record, one saved-model format for every method.

    thumbnail=true   the whole image squashed to the crop size instead (an expert for images too
                     small to crop, such as CIFAKE's 32 px ones: preset npr-tiny)
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
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
from .views import NativeViewConfig

OPTIONS = {
    "encoder": "npr-small",    # npr-small (64 px native crops) | npr-tiny (32 px thumbnails)
    "thumbnail": False,        # squash whole images to the crop size instead of cropping (small-image expert)
    "residual": True,          # false: the CNN reads pixels, not the NPR residual (ablation)
    "width": None,             # preset overrides: channels of the first stage,
    "image_size": None,        #   training crop side
    "epochs": 6,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "region": 256,             # native square kept per training image (memory: 256 px = 200 KB)
    "eval_size": None,         # side of the native centre crop the detector reads (default 3x the crop),
                               #   read as tiles of the crop size whose embeddings are averaged
    "jpeg_quality": [30, 100], # JPEG re-compression range drawn for both classes
    "min_side": None,          # train only on images at least this large (default: the crop size; 0 for thumbnail)
    "run_dir": None,           # checkpoints + metrics.jsonl + the encoder (default: a temporary folder)
    "resume": True,
    "max_minutes": None,       # time budget for training (stops with a checkpoint; the head is still fitted)
    "workers": 2,
    "threads": None,
    "head_l2": None,           # the linear head's l2 (default: the linear head's own sweep)
}


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


def parse_options(opts: dict) -> dict:
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise ValueError(f"--method lowlevel: unknown option(s) {sorted(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    o = {**OPTIONS, **opts}
    if o["encoder"] not in LOWLEVEL_PRESETS:
        raise ValueError(f"encoder {o['encoder']!r} unknown; choose from {', '.join(LOWLEVEL_PRESETS)}")
    for k in ("thumbnail", "residual", "resume"):
        o[k] = str(o[k]).strip().lower() in ("1", "true", "yes", "on")
    return o


def lowlevel_config(o: dict) -> LowLevelConfig:
    cfg = replace(LOWLEVEL_PRESETS[o["encoder"]], residual=o["residual"])
    over = {k: int(o[k]) for k in ("width", "image_size") if o[k]}
    return replace(cfg, **over)


def train_encoder(samples, o: dict, seed: int = 0, log=print) -> tuple[LowLevelCNN, dict]:
    """Train the CNN on `samples` (labelled); returns it (eval mode, CPU) and a training record."""
    t0 = time.time()
    if o["threads"]:
        torch.set_num_threads(int(o["threads"]))
    cfg = lowlevel_config(o)
    min_side = int(o["min_side"]) if o["min_side"] is not None else (0 if o["thumbnail"] else cfg.image_size)
    view = NativeViewConfig(size=cfg.image_size, jpeg_quality=tuple(map(int, o["jpeg_quality"])))
    data = NativeCrops(samples, view, int(o["region"]), seed, int(o["workers"]), thumbnail=o["thumbnail"],
                       min_side=min_side)
    if data.too_small:
        log(f"lowlevel: {data.too_small} images under {min_side} px left out of training")
    if len(set(data.labels.tolist())) < 2:
        raise ValueError("lowlevel: training needs real and fake images large enough to crop "
                         f"({min_side} px or more); set min_side=0 or thumbnail=true for small images")
    torch.manual_seed(seed)
    encoder = LowLevelCNN(cfg)
    model = WithLogit(encoder)
    n = len(data)
    B = engine.global_batch_size(n, int(o["batch_size"]), 1)
    steps = max(1, (n // B) * int(o["epochs"]))
    loop = engine.TrainLoopConfig(epochs=int(o["epochs"]), batch_size=int(o["batch_size"]), lr=float(o["lr"]),
                                  weight_decay=float(o["weight_decay"]), warmup_steps=int(0.05 * steps), seed=seed,
                                  out_dir=o["run_dir"], resume=o["resume"], checkpoint_every=50,
                                  max_seconds=60 * float(o["max_minutes"]) if o["max_minutes"] else None,
                                  workers=int(o["workers"]), desc="lowlevel")
    history = engine.run(model, bce_objective, data, loop, log=log)
    record = {"encoder_parameters": count_parameters(encoder), "images": n, "left_out_small": data.too_small,
              "view": asdict(view), "history": history, "loop": asdict(loop),
              "train_seconds": round(time.time() - t0, 1)}
    return encoder.cpu().eval(), record


@register_recipe("lowlevel")
def fit_lowlevel_detector(cfg, samples, log, fit_detector):
    """cfg: a train.TrainConfig with method lowlevel (options in head_options). Trains the encoder on
    the training split, saves it, then fits the linear head on it through `fit_detector`
    (train.fit_detector, handed in: training/methods.py)."""
    o = parse_options(dict(cfg.head_options))
    samples = training_samples(cfg, samples)
    train, _ = held_out_split(cfg, samples)
    encoder, record = train_encoder(train, o, cfg.seed, log)
    run_dir = Path(o["run_dir"] or tempfile.mkdtemp(prefix="fakescope-lowlevel-"))
    size = encoder.cfg.image_size
    eval_size = int(o["eval_size"] or (size if o["thumbnail"] else 3 * size))
    resize = "resize" if o["thumbnail"] else "native_crop"
    enc_dir = save_encoder(run_dir / "encoder", encoder, asdict(parse_spec(f"pixels?size={eval_size}&resize={resize}")),
                           {"recipe": "lowlevel", "training": {k: v for k, v in record.items() if k != "history"}})
    head = {"l2": float(o["head_l2"])} if o["head_l2"] is not None else {}
    det = fit_detector(replace(cfg, backbone=f"trained:{enc_dir}", method="linear", head_options=head,
                               views=1), samples, log=log)
    det.metadata["recipe"] = "lowlevel"
    det.metadata["lowlevel"] = {"options": {k: v for k, v in o.items() if k != "run_dir"}, **record}
    return det


__all__ = ["OPTIONS", "fit_lowlevel_detector", "parse_options", "train_encoder"]
