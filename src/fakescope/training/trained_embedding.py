"""`fakescope train --method code|natural-traces`: labelled images -> trained encoder -> head -> Detector.

    split by image (as every fakescope training: the held-out images set the threshold)
    -> training items (image views for a ViT; cached frozen features of views for an adapter)
    -> the engine (1 process, or N under torchrun) trains the encoder
    -> rank 0: embeddings of the clean training images -> head (knn / logistic / ocsvm / distance)
    -> threshold at the target FPR on held-out reals -> Detector (spec of the encoder's input + head)

Options (`--set KEY=VALUE`, all optional; TrainedEmbeddingOptions below lists them with defaults):
    encoder=vit-small32 | vit-tiny | vit-crop64 | adapter (on --backbone) | adapter:<spec> | trained:<dir>
    head=knn (code) / distance (natural-traces) | logistic | ocsvm | ocsvm-poly | knn | distance
    epochs, batch_size, lr, temperature, ... see TrainedEmbeddingOptions.
Under torchrun only rank 0 returns a Detector; the other ranks return None.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backbones import BackboneSpec, load_backbone, parse_spec
from ..backbones.encoders import VIT_PRESETS, FeatureAdapter, ViT, count_parameters, load_encoder, vit_config
from ..backbones.trained import encoder_dir
from ..data.samples import REAL, Sample
from ..detector import Detector
from ..features import FeatureCache, extract
from ..heads import make_head
from ..heads.trained_embedding import HEAD_NAMES, make_inner_head
from . import engine
from .code import train_code
from .common import describe, held_out_split, run_metadata, threshold_and_validation, training_samples
from .data import FeatureViews, ImageViews, decode_samples, view_features
from .methods import register_recipe
from .natural_traces import train_natural_traces
from .options import typed_options
from .views import ViewConfig

METHODS = ("code", "natural-traces")

@dataclass(frozen=True)
class TrainedEmbeddingOptions:
    """`--set` options of --method code / natural-traces (all optional; parse_trained_options)."""
    encoder: str = "vit-small32"   # vit-small32 | vit-tiny | vit-crop64 | adapter | adapter:<spec> | trained:<dir>
    head: str | None = None        # knn (code default) | distance (natural-traces default) | logistic | ocsvm | ocsvm-poly
    epochs: int = 10               # training epochs (natural-traces: of stage 2)
    stage1_epochs: int | None = None   # natural-traces stage 1 (reals only); default epochs // 2
    batch_size: int = 128          # global batch (all processes together)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05           # fraction of the steps spent warming up
    temperature: float = 0.1       # CoDE InfoNCE / natural-traces stage 2
    stage1_temperature: float = 0.2   # natural-traces stage 1 NT-Xent
    positives: str = "pair"        # CoDE local term: the image's own global view ("pair", CoDE) or all same-class ones ("class")
    image_term: bool = True        # CoDE image term: clean image vs augmented other image of its class (CoDE); false: local term only
    prototypes: int = 4            # natural-traces: learnable real prototypes in stage 2
    supervised_weight: float = 1.0   # natural-traces: weight of the real/fake BCE term in stage 2 (the paper's; 0: contrastive only)
    score_by: str = "traces"       # natural-traces distance head: to the learned traces ("traces") or a refitted real centre ("centroid")
    global_scale: tuple[float, ...] = (0.4, 1.0)   # area fraction of global views
    local_scale: tuple[float, ...] = (0.05, 0.4)   # area fraction of local views
    pre_crop: int | None = None    # ViT: first a native-resolution crop of this many px (large photos)
    image_size: int | None = None  # ViT preset overrides: input side,
    patch: int | None = None       #   patch side,
    dim: int | None = None         #   width,
    depth: int | None = None       #   blocks,
    heads: int | None = None       #   attention heads
    eval_size: int | None = None   # ViT: side of the image the detector reads (default: the encoder's input);
                                   #   larger -> tiles of the encoder's input, embeddings averaged
    eval_resize: str | None = None   # ViT: resize (default) or native_crop (keep pixel traces of large photos)
    global_views: int = 2          # adapter: cached global views per image (view 0 = the clean image)
    local_views: int = 2           # adapter: cached local views per image
    hidden: int = 512              # adapter MLP: hidden width,
    out_dim: int = 128             #   embedding width
    k: int | None = None           # knn head: neighbours (code: 1, CoDE's exact cosine 1-NN; natural-traces: 10, weighted)
    C: str | float = "auto"        # logistic head: auto (code: 0.316 on the raw embedding, CoDE's; natural-traces: sweep),
                                   #   sweep (fakescope's L2 swept on a held-out split, standardised features) or a number
    nu: float = 0.1                # ocsvm (RBF random features, fakescope's) and ocsvm-poly (CoDE's) heads
    head_prototypes: int = 1       # distance head: k-means centres of the real embeddings
    run_dir: str | None = None     # checkpoints + metrics.jsonl (the CLI uses MODEL_DIR/training)
    resume: bool = True            # continue an interrupted run from run_dir (if its settings match)
    checkpoint_every: int = 50     # steps between checkpoints (and at every epoch end)
    max_steps: int | None = None   # stop after this many optimizer steps
    max_minutes: float | None = None   # time budget for each training stage (stops with a checkpoint; the head is still fitted)
    workers: int = 2               # threads building views
    threads: int | None = None     # torch intra-op threads (default: torch's)
    amp: str = "auto"              # auto | off | bf16 | fp16
    device: str = "auto"


def parse_trained_options(method: str, opts: dict) -> TrainedEmbeddingOptions:
    o = typed_options(TrainedEmbeddingOptions, opts, f"--method {method}")
    if o.head is None:
        o = replace(o, head="knn" if method == "code" else "distance")
    if o.score_by not in ("traces", "centroid"):
        raise ValueError(f"score_by must be 'traces' or 'centroid', got {o.score_by!r}")
    if o.head not in HEAD_NAMES:
        raise ValueError(f"head {o.head!r} unknown; choose from {', '.join(sorted(HEAD_NAMES))}")
    enc = o.encoder
    if not (enc in VIT_PRESETS or enc == "adapter" or enc.startswith(("adapter:", "trained:"))):
        raise ValueError(f"encoder {enc!r} unknown; choose from {', '.join(VIT_PRESETS)}, adapter, "
                         "adapter:<backbone spec>, trained:<encoder dir>")
    if o.stage1_epochs is None:
        o = replace(o, stage1_epochs=max(1, o.epochs // 2))
    return o


def _loop(o: TrainedEmbeddingOptions, seed: int, epochs: int, n: int, world: int, run_dir: str | None,
          desc: str) -> engine.TrainLoopConfig:
    B = engine.global_batch_size(n, o.batch_size, world)
    steps = max(1, (n // B) * epochs)
    return engine.TrainLoopConfig(epochs=epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay,
                                  warmup_steps=int(o.warmup * steps), seed=seed, out_dir=run_dir, resume=o.resume,
                                  checkpoint_every=o.checkpoint_every or 0, max_steps=o.max_steps or None,
                                  max_seconds=60 * o.max_minutes if o.max_minutes else None, amp=o.amp,
                                  device=o.device, workers=o.workers, desc=desc)


def inner_head_options(method: str, o: TrainedEmbeddingOptions) -> dict:
    """The head's options; CoDE's published heads by default for code (1-NN, C 0.316 balanced, poly OCSVM)."""
    name = HEAD_NAMES[o.head]
    if name == "knn":
        return {"k": o.k or (1 if method == "code" else 10)}
    if name in ("ocsvm", "ocsvm-poly"):
        return {"nu": o.nu}
    if name == "distance":
        return {"prototypes": o.head_prototypes}
    if name == "linear":
        C = o.C if o.C != "auto" else (0.316 if method == "code" else "sweep")
        return {} if C == "sweep" else {"C": float(C), "standardize": False}
    return {}


def _vit(o: TrainedEmbeddingOptions):
    over = {k: getattr(o, k) for k in ("image_size", "patch", "dim", "depth", "heads") if getattr(o, k) is not None}
    return ViT(vit_config(o.encoder, over))


@register_recipe(*METHODS)
def fit_trained_detector(cfg, samples: Sequence[Sample] | None = None, log=print, fit_detector=None):
    """cfg: a fit.TrainConfig with method code / natural-traces and the options in head_options.
    (`fit_detector`, every recipe's last argument, is not needed here: the head is fitted below.)"""
    if cfg.method not in METHODS:
        raise ValueError(f"not a trained-embedding method: {cfg.method!r}")
    if cfg.modality != "image" or cfg.text_encoder:
        raise ValueError(f"--method {cfg.method} reads images only (no --text / --modality)")
    o = parse_trained_options(cfg.method, dict(cfg.head_options))
    if o.threads:
        torch.set_num_threads(o.threads)
    t_start = time.time()
    d = engine.init_distributed(o.device)
    try:
        train, val = held_out_split(cfg, training_samples(cfg, samples))
        if d.is_main:
            log(f"train {describe(train)}; validation {describe(val)}; encoder {o.encoder}; "
                f"{d.world_size} process(es)")
        enc_name = o.encoder
        gs, ls = o.global_scale, o.local_scale
        run_dir = o.run_dir
        torch.manual_seed(cfg.seed)
        info: dict = {"options": {k: v for k, v in asdict(o).items() if k != "run_dir"}}
        traces = None  # natural-traces: the learned prototypes, when stage 2 runs here
        cache = None

        # ---------------------------------------------------------- encoder + training items
        if enc_name.startswith("trained:"):
            encoder, emeta = load_encoder(encoder_dir(enc_name.split(":", 1)[1]))
            in_spec = BackboneSpec.from_dict(emeta["input"])
            cache = FeatureCache(cfg.cache, in_spec) if cfg.cache else None
            dataset = None
        elif enc_name.startswith("adapter"):
            bspec = enc_name.split(":", 1)[1] if ":" in enc_name else cfg.backbone
            backbone = load_backbone(bspec)
            in_spec = backbone.spec
            cache = FeatureCache(cfg.cache, in_spec) if cfg.cache else None
            feats = {}
            for rank_turn in ([0, 1] if d.world_size > 1 else [None]):
                # rank 0 fills the cache first; the others then read it (or compute, without a shared disk)
                if rank_turn is None or (rank_turn == 0) == d.is_main:
                    feats["global"], ok_g = view_features(train, backbone, cache, ViewConfig(out_size=None, scale=gs),
                                                          o.global_views, cfg.seed, include_clean=True,
                                                          desc="global view features")
                    feats["local"], ok_l = view_features(train, backbone, cache, ViewConfig(out_size=None, scale=ls),
                                                         o.local_views, cfg.seed, desc="local view features")
                if rank_turn is not None:
                    engine.barrier()
            ok = ok_g & ok_l
            if d.is_main and not ok.all():
                log(f"{int((~ok).sum())} training images left out: unreadable, or the backbone failed on them")
            train = [s for s, k in zip(train, ok) if k]
            feats = {k: v[ok] for k, v in feats.items()}
            encoder = FeatureAdapter(feats["global"].shape[2], o.hidden, o.out_dim)
            encoder.set_statistics(feats["global"][:, 0])
            dataset = FeatureViews(feats, [s.label for s in train], image_term=(cfg.method == "code" and o.image_term))
        else:
            encoder = _vit(o)
            S = encoder.cfg.image_size
            eval_size = int(o.eval_size or S)
            in_spec = parse_spec(f"pixels?size={eval_size}&resize={o.eval_resize or 'resize'}")
            images, _ = decode_samples(train)
            keep = [i for i, im in enumerate(images) if im is not None]
            if d.is_main and len(keep) < len(train):
                log(f"{len(train) - len(keep)} unreadable training images left out")
            train = [train[i] for i in keep]
            pre = o.pre_crop or None
            dataset = ImageViews([images[i] for i in keep], [s.label for s in train],
                                 ViewConfig(out_size=S, scale=gs, pre_crop=pre), ViewConfig(out_size=S, scale=ls, pre_crop=pre),
                                 image_term=(cfg.method == "code" and o.image_term))
        info["encoder_parameters"] = count_parameters(encoder)

        # ---------------------------------------------------------- training
        if dataset is not None:
            n = len(dataset)
            if cfg.method == "code":
                loop = _loop(o, cfg.seed, o.epochs, n, d.world_size, run_dir, "code")
                info["history"] = train_code(encoder, dataset, loop, o.temperature, o.positives, log=log)
                info["loop"] = asdict(loop)
            else:
                n_real = int((np.asarray(dataset.labels) == REAL).sum())
                l1 = _loop(o, cfg.seed, o.stage1_epochs, n_real, d.world_size,
                           str(Path(run_dir) / "stage1") if run_dir else None, "natural-traces stage 1")
                l2 = _loop(o, cfg.seed, o.epochs, n, d.world_size,
                           str(Path(run_dir) / "stage2") if run_dir else None, "natural-traces stage 2")
                res = train_natural_traces(encoder, dataset, l1, l2, o.prototypes, o.stage1_temperature,
                                           o.temperature, o.supervised_weight, log=log)
                traces = res["prototypes"].cpu().numpy()
                info["history"] = {"stage1": res["stage1"], "stage2": res["stage2"]}
                info["loop"] = {"stage1": asdict(l1), "stage2": asdict(l2)}
            encoder = encoder.cpu().eval()
        info["train_seconds"] = round(time.time() - t_start, 1)
        info["world_size"] = d.world_size
        engine.shutdown_distributed(d)  # training is over: rank 0 fits the head alone, the others are done
        d.created = False
        if not d.is_main:
            return None

        # ---------------------------------------------------------- head on the embedding (rank 0)
        input_backbone = load_backbone(in_spec)
        shape = (3, in_spec.input_size, in_spec.input_size) if in_spec.kind == "pixels" else None
        head_opts = inner_head_options(cfg.method, o)
        if o.head == "distance" and o.score_by == "traces":
            if traces is None:  # trained:<dir> (no stage 2 here) or --method code: no learned traces
                log("distance head: no learned natural traces in this run; scoring by a refitted real centre")
            else:
                head_opts = {"centres": traces}
        head = make_head(cfg.method, encoder=encoder, input_shape=shape,
                         head=make_inner_head(o.head, seed=cfg.seed, **head_opts))
        rows, X, errors = extract(train, input_backbone, cache, desc="head features")
        y = np.array([train[i].label for i, _ in rows])
        t0 = time.time()
        info["head_fit"] = head.fit(X, y, np.array([train[i].group_key() for i, _ in rows]))  # families stay together
        info["head_seconds"] = round(time.time() - t0, 1)

        threshold, val_metrics, by_source = 0.5, None, {}
        if val:
            vrows, VX, _ = extract(val, input_backbone, cache, desc="validation features")
            vsamples = [val[i] for i, _ in vrows]
            vy = np.array([s.label for s in vsamples])
            vs = head.predict(VX)
            threshold, val_metrics, by_source = threshold_and_validation(cfg, vsamples, vy, vs)
        info["total_seconds"] = round(time.time() - t_start, 1)
        metadata = run_metadata(cfg, train, val, val_metrics, by_source, info, len(errors),
                                recipe=cfg.method, head_name=o.head)
        return Detector(spec=in_spec, head=head, threshold=threshold, id=cfg.model_id, version=cfg.version,
                        metadata=metadata, _backbone=input_backbone)
    finally:
        engine.shutdown_distributed(d)


__all__ = ["TrainedEmbeddingOptions", "fit_trained_detector", "inner_head_options", "parse_trained_options"]
