"""Fit a head on frozen features: the engine behind `fakescope train`.

Split by group (data/splits.py: a parent photo and its generated children, a (real, edit)
pair, the views of one image stay together), extract features through the cache (augmented
views for training, the clean view for validation), fit the head, then set the threshold on
the validation reals to a target false-positive rate and record everything needed to judge
the model in its metadata.
"""
from __future__ import annotations

import datetime as dt
import platform
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .backbones import load_backbone, parse_spec
from .data.augment import AugmentConfig
from .data.samples import FAKE, REAL, Sample, balanced_subset
from .data.sources import load_labelled
from .data.splits import split_samples
from .detector import Detector
from .evaluation.metrics import metrics_by_generator, summary, threshold_at_fpr
from .features import DEFAULT_CACHE, FeatureCache, extract, head_input
from .heads import HEADS_READING_TEXT, make_head
from .uncertainty import UncertaintyConfig, fit_uncertainty


@dataclass
class TrainConfig:
    data: Sequence[str]                 # folders / tars / manifests with real/ and fake/
    backbone: str = "effnet-lite0"      # registry spec string
    method: str = "linear"
    views: int = 1                      # 1 = clean images only; k > 1 adds k-1 augmented views per training image
    per_class: int | None = None        # cap per class and per source (balanced, seeded)
    val_fraction: float = 0.15          # held-out images for validation metrics and the threshold
    target_fpr: float = 0.05            # threshold: at most this fraction of held-out reals called fake
    calibrate_on: Sequence[str] = ()    # sources whose held-out reals set the threshold (default: all)
    seed: int = 0
    cache: str | None = str(DEFAULT_CACHE)   # None disables the feature cache
    model_id: str = "custom"
    version: str = "1"
    head_options: dict = field(default_factory=dict)   # passed to the head, e.g. {"alpha": 0.9, "sam": False}
    text_encoder: str | None = None     # caption encoder spec ("minilm", "hf-clip-text:<ref>"); None: images only
    modality: str = "image"             # what the head reads: "image", "text" or "both"
    # how the "uncertain" rule (uncertainty.py) is fitted on this run's held-out images; None: no rule
    uncertainty: UncertaintyConfig | None = field(default_factory=UncertaintyConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)   # how the views beyond the first are made

    def __post_init__(self):
        # `--set augment.<field>=...` arrives among the head options: it configures the views, not the head
        lifted = {k: v for k, v in self.head_options.items() if k.startswith("augment.")}
        if lifted:
            self.head_options = {k: v for k, v in self.head_options.items() if k not in lifted}
            given = AugmentConfig.from_options(lifted)  # validates names; only the given fields change
            self.augment = replace(self.augment, **{k.removeprefix("augment."): getattr(given, k.removeprefix("augment."))
                                                    for k in lifted})


def load_sources(sources: Sequence[str], per_class: int | None, seed: int = 0) -> list[Sample]:
    samples: list[Sample] = []
    for src in sources:
        part = list(load_labelled(src))
        if not part:
            raise ValueError(f"{src}: no labelled images found (expected real/ and fake/)")
        for s in part:
            s.source = str(src)
        samples += balanced_subset(part, per_class, seed)
    return samples


def describe(samples: Sequence[Sample]) -> dict:
    return {"n": len(samples), "real": sum(s.label == REAL for s in samples),
            "fake": sum(s.label == FAKE for s in samples),
            "generators": dict(Counter(s.generator or "unnamed" for s in samples if s.label == FAKE))}


def caption_features(samples: Sequence[Sample], encoder) -> np.ndarray:
    """One embedding per sample's caption; each distinct text is encoded once."""
    missing = sum(s.text is None for s in samples)
    if missing:
        raise ValueError(f"{missing} of {len(samples)} images have no caption; captions come from a manifest "
                         "`text`/`caption` column or a tar's manifest.csv / table.csv")
    unique = sorted({s.text for s in samples})
    emb = encoder.encode(unique)
    row = {t: i for i, t in enumerate(unique)}
    return emb[[row[s.text] for s in samples]]


def head_options(cfg: TrainConfig, backbone) -> dict:
    """Options the head needs from the backbone: the block sizes of a multi-layer feature vector,
    read off one forward pass (layers of a CNN differ in width, a ViT's do not)."""
    opts = dict(cfg.head_options)
    if cfg.method == "multilayer" and "blocks" not in opts:
        spec = backbone.spec
        if not spec.layers or cfg.modality != "image":
            raise ValueError("method multilayer reads several layers' class tokens: use an image backbone spec "
                             "with ?layers=..., e.g. vit-s14-focus?layers=3,6,9")
        from PIL import Image
        from .backbones import preprocess
        f = backbone.forward(preprocess(Image.new("RGB", (spec.input_size,) * 2, (128, 128, 128)), spec)[None])
        opts["blocks"] = ([f.pooled.shape[1]] if spec.pooled else []) + [f.layers[k].shape[1] for k in spec.layers]
    return opts


def threshold_and_validation(cfg: TrainConfig, vsamples: Sequence[Sample], vy: np.ndarray,
                             vs: np.ndarray) -> tuple[float, dict | None, dict]:
    """The threshold for `cfg.target_fpr` on the held-out reals (of `cfg.calibrate_on` sources when
    given), and the validation metrics at it: overall (with per-generator) and per source."""
    threshold, val_metrics, by_source = 0.5, None, {}
    calib = (vy == REAL) & np.array([not cfg.calibrate_on or s.source in map(str, cfg.calibrate_on)
                                     for s in vsamples])
    if calib.any():
        threshold = threshold_at_fpr(vs[calib], cfg.target_fpr)
    if len(set(vy)) == 2:
        val_metrics = summary(vy, vs, threshold)
        val_metrics["per_generator"] = metrics_by_generator(vy, vs, [s.generator for s in vsamples], threshold)
    for src in sorted({s.source for s in vsamples if s.source}):
        m = np.array([s.source == src for s in vsamples])
        by_source[src] = summary(vy[m], vs[m], threshold)
    return threshold, val_metrics, by_source


def fit_detector(cfg: TrainConfig, samples: Sequence[Sample] | None = None, log=print) -> Detector:
    if cfg.method in ("code", "natural-traces"):  # trained embeddings: their own encoder, not frozen features
        from .training.fit import fit_trained_detector
        return fit_trained_detector(cfg, samples, log=log)  # None on torchrun ranks other than 0
    if cfg.method == "fusion":  # several experts (each fitted through here) and a stacking layer
        from .training.fusion import fit_fused_detector
        return fit_fused_detector(cfg, samples, log=log)
    if cfg.method == "lowlevel":  # a CNN on generator traces trained from scratch, then a linear head on it
        from .training.lowlevel import fit_lowlevel_detector
        return fit_lowlevel_detector(cfg, samples, log=log)
    samples = list(samples) if samples is not None else load_sources(cfg.data, cfg.per_class, cfg.seed)
    backbone = load_backbone(cfg.backbone)
    spec = backbone.spec
    cache = FeatureCache(cfg.cache, spec) if cfg.cache else None
    is_val = split_samples(samples, cfg.val_fraction, cfg.seed)  # by group: a family stays on one side
    train = [s for s, v in zip(samples, is_val) if not v]
    val = [s for s, v in zip(samples, is_val) if v]
    augment = cfg.augment
    log(f"train {describe(train)}; validation {describe(val)}; backbone {spec.name}")

    rows, X, errors = extract(train, backbone, cache, views=range(cfg.views), augment=augment, desc="train features")
    y = np.array([train[i].label for i, _ in rows])
    groups = np.array([train[i].group_key() for i, _ in rows])  # heads' own splits keep views and families together
    for path, err in errors:
        log(f"skipped {path}: {err}")
    encoder, T, leak = None, None, None
    if cfg.text_encoder:
        from .backbones.text import load_text_encoder
        from .training.leakage import warn_if_text_leaks
        encoder = load_text_encoder(cfg.text_encoder)
        T = caption_features([train[i] for i, _ in rows], encoder)
        leak = warn_if_text_leaks(T, y, groups)  # a caption that gives the label away is a shortcut
        log(f"text-only probe: held-out AUC {leak['text_only_auc']:.3f}" + (" -- " + leak["message"] if leak["leaks"] else ""))
    elif cfg.modality != "image" or cfg.method in HEADS_READING_TEXT:
        raise ValueError(f"modality {cfg.modality!r} / method {cfg.method!r} needs captions: set a text encoder")
    head = make_head(cfg.method, seed=cfg.seed, **head_options(cfg, backbone))
    fit_text = {"text": T} if cfg.method in HEADS_READING_TEXT else {}
    info = head.fit(head_input(X, T, cfg.modality), y, groups, **fit_text)

    threshold, val_metrics, by_source, uncertainty = 0.5, None, {}, None
    if val:
        vrows, VX, _ = extract(val, backbone, cache, desc="validation features")
        vsamples = [val[i] for i, _ in vrows]
        vy = np.array([s.label for s in vsamples])
        VT = caption_features(vsamples, encoder) if encoder is not None and cfg.modality != "image" else None
        vs = head.predict(head_input(VX, VT, cfg.modality))
        if hasattr(head, "analysis") and len(set(vy)) == 2:  # e.g. disentangle: semantic vs low-level signal
            info["validation_analysis"] = head.analysis(VX, vy)
        threshold, val_metrics, by_source = threshold_and_validation(cfg, vsamples, vy, vs)
        if cfg.uncertainty is not None and cfg.modality == "image" and len(set(vy)) == 2:
            uncertainty = fit_uncertainty(X, VX, vy, vs, threshold, cfg.uncertainty, seed=cfg.seed)
    metadata = {
        "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fakescope_version": __version__,
        "data": [str(Path(d)) for d in cfg.data],
        "train": describe(train), "validation": describe(val),
        "views": cfg.views, "augment": augment.__dict__ if cfg.views > 1 else None,
        "threshold_rule": f"at most {cfg.target_fpr:.0%} of held-out real images "
                          f"{'of ' + ', '.join(map(str, cfg.calibrate_on)) + ' ' if cfg.calibrate_on else ''}scored >= threshold",
        "target_fpr": cfg.target_fpr,
        "text_encoder": cfg.text_encoder, "modality": cfg.modality, "text_leak_check": leak,
        "validation_metrics": val_metrics, "validation_by_source": by_source, "fit": info, "skipped_images": len(errors),
        "machine": platform.platform(),
    }
    return Detector(spec=spec, head=head, threshold=threshold, id=cfg.model_id, version=cfg.version,
                    metadata=metadata, text_encoder=cfg.text_encoder, modality=cfg.modality, _backbone=backbone,
                    _text=encoder, uncertainty=uncertainty)


__all__ = ["TrainConfig", "fit_detector", "load_sources", "parse_spec"]
