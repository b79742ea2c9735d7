"""Fit a detector: the engine behind `fakescope train`, and the one entry every method goes through.

`fit_detector` first looks the method up among the training recipes (methods.py:
code, natural-traces, lowlevel, fusion; imported below, so they are registered) and hands the
run to it. Any other method is a head on frozen features, fitted here: split by group
(data/splits.py: a parent photo and its generated children, a (real, edit) pair, the views of
one image stay together), extract features through the cache (augmented views for training,
the clean view for validation), fit the head, then set the threshold on the validation reals to
a target false-positive rate and record everything needed to judge the model in its metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..backbones import load_backbone, parse_spec
from ..data.augment import AugmentConfig
from ..data.samples import Sample
from ..detector import Detector
from ..features import DEFAULT_CACHE, FeatureCache, extract, head_input
from ..heads import head_class, make_head
from ..uncertainty import UncertaintyConfig, fit_uncertainty
from . import fusion as _fusion, lowlevel as _lowlevel, trained_embedding as _trained_embedding  # noqa: F401 (recipes)
from .common import (describe, head_options, held_out_split, load_sources, out_of_source_scores, run_metadata,
                     threshold_and_validation, training_samples)
from .methods import recipe


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


def fit_detector(cfg: TrainConfig, samples: Sequence[Sample] | None = None, log=print) -> Detector:
    own = recipe(cfg.method)
    if own is not None:  # trains more than a head (an encoder, experts): None on torchrun ranks other than 0
        return own.fit(cfg, samples, log, fit_detector)
    reads_text = head_class(cfg.method).reads_text  # an unknown method fails here, before any feature
    samples = training_samples(cfg, samples)
    backbone = load_backbone(cfg.backbone)
    spec = backbone.spec
    cache = FeatureCache(cfg.cache, spec) if cfg.cache else None
    train, val = held_out_split(cfg, samples)  # by group: a family stays on one side
    augment = cfg.augment
    log(f"train {describe(train)}; validation {describe(val)}; backbone {spec.name}")

    rows, X, errors = extract(train, backbone, cache, views=range(cfg.views), augment=augment, desc="train features")
    y = np.array([train[i].label for i, _ in rows])
    groups = np.array([train[i].group_key() for i, _ in rows])  # heads' own splits keep views and families together
    for path, err in errors:
        log(f"skipped {path}: {err}")
    encoder, T, leak = None, None, None
    if cfg.text_encoder:
        from ..backbones.text import load_text_encoder
        from .leakage import warn_if_text_leaks
        encoder = load_text_encoder(cfg.text_encoder)
        T = caption_features([train[i] for i, _ in rows], encoder)
        leak = warn_if_text_leaks(T, y, groups)  # a caption that gives the label away is a shortcut
        log(f"text-only probe: held-out AUC {leak['text_only_auc']:.3f}" + (" -- " + leak["message"] if leak["leaks"] else ""))
    elif cfg.modality != "image" or reads_text:
        raise ValueError(f"modality {cfg.modality!r} / method {cfg.method!r} needs captions: set a text encoder")
    head = make_head(cfg.method, seed=cfg.seed, **head_options(cfg, backbone))
    fit_text = {"text": T} if reads_text else {}
    info = head.fit(head_input(X, T, cfg.modality), y, groups, **fit_text)

    threshold, val_metrics, by_source, uncertainty = 0.5, None, {}, None
    if val:
        vrows, VX, _ = extract(val, backbone, cache, desc="validation features")
        vsamples = [val[i] for i, _ in vrows]
        vy = np.array([s.label for s in vsamples])
        VT = caption_features(vsamples, encoder) if encoder is not None and cfg.modality != "image" else None
        vs = head.predict(head_input(VX, VT, cfg.modality))
        analysis = head.analysis(VX, vy) if len(set(vy)) == 2 else None
        if analysis is not None:  # e.g. disentangle: semantic vs low-level signal
            info["validation_analysis"] = analysis
        threshold, val_metrics, by_source = threshold_and_validation(cfg, vsamples, vy, vs)
        if cfg.uncertainty is not None and cfg.modality == "image" and len(set(vy)) == 2:
            oos = None
            if cfg.uncertainty.from_sources:
                row_sources = np.array([str(train[i].source) for i, _ in rows])
                oos = out_of_source_scores(cfg, backbone, X, y, groups, row_sources,
                                           clean=np.array([v == 0 for _, v in rows]), log=log)
            # a spec with intermediate blocks after its pooled embedding: familiarity in the embedding
            columns = int(spec.dim) if spec.layers and spec.pooled else None
            uncertainty = fit_uncertainty(X, VX, vy, vs, threshold, cfg.uncertainty, seed=cfg.seed, out_of_source=oos,
                                          columns=columns)
    metadata = run_metadata(cfg, train, val, val_metrics, by_source, info, len(errors),
                            views=cfg.views, augment=augment.__dict__ if cfg.views > 1 else None,
                            text_encoder=cfg.text_encoder, modality=cfg.modality, text_leak_check=leak)
    return Detector(spec=spec, head=head, threshold=threshold, id=cfg.model_id, version=cfg.version,
                    metadata=metadata, text_encoder=cfg.text_encoder, modality=cfg.modality, _backbone=backbone,
                    _text=encoder, uncertainty=uncertainty)


__all__ = ["TrainConfig", "describe", "fit_detector", "load_sources", "parse_spec", "recipe", "threshold_and_validation"]
