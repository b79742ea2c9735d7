"""What every training recipe shares: the labelled sources, the held-out split, the threshold on
held-out reals with the validation metrics at it, and how the run describes its data.

`cfg` below is a `fit.TrainConfig` (read, never built here: this module sits under every recipe
and under fit.py, which imports the recipes)."""
from __future__ import annotations

import datetime as dt
import platform
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..data.samples import FAKE, REAL, Sample, balanced_subset
from ..data.sources import load_labelled
from ..data.splits import split_samples
from ..backbones.spec import block_widths
from ..evaluation.metrics import metrics_by_generator, summary, threshold_at_fpr
from ..heads import head_class, make_head


def source_parts(sources: Sequence[str]) -> list[list[Sample]]:
    """Every labelled image of each source, each tagged with its source."""
    parts = []
    for src in sources:
        part = list(load_labelled(src))
        if not part:
            raise ValueError(f"{src}: no labelled images found (expected real/ and fake/)")
        for s in part:
            s.source = str(src)
        parts.append(part)
    return parts


def subset_of_parts(parts: Sequence[list[Sample]], per_class: int | None, seed: int = 0) -> list[Sample]:
    """At most `per_class` per class and source: the same images `load_sources` picks."""
    return [s for part in parts for s in balanced_subset(part, per_class, seed)]


def load_sources(sources: Sequence[str], per_class: int | None, seed: int = 0) -> list[Sample]:
    return subset_of_parts(source_parts(sources), per_class, seed)


def training_samples(cfg, samples: Sequence[Sample] | None) -> list[Sample]:
    """The samples given, else those of `cfg.data` (at most `cfg.per_class` per class and source);
    a run that cannot finish with them fails here, before any feature is computed."""
    out = list(samples) if samples is not None else load_sources(cfg.data, cfg.per_class, cfg.seed)
    if cfg.uncertainty is not None and cfg.uncertainty.from_sources and len({s.source for s in out}) < 2:
        raise ValueError(f"the {cfg.uncertainty.band!r} band of \"uncertain\" scores each training source by a head "
                         "fitted without it: it needs two or more sources (--data given twice or more)")
    return out


def held_out_split(cfg, samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) by group (data/splits.py): a family stays on one side."""
    is_val = split_samples(samples, cfg.val_fraction, cfg.seed)
    return [s for s, v in zip(samples, is_val) if not v], [s for s, v in zip(samples, is_val) if v]


def describe(samples: Sequence[Sample]) -> dict:
    return {"n": len(samples), "real": sum(s.label == REAL for s in samples),
            "fake": sum(s.label == FAKE for s in samples),
            "generators": dict(Counter(s.generator or "unnamed" for s in samples if s.label == FAKE))}


def threshold_rule(cfg) -> str:
    """The threshold rule in words, as the model's metadata records it."""
    among = f"of {', '.join(map(str, cfg.calibrate_on))} " if cfg.calibrate_on else ""
    return f"at most {cfg.target_fpr:.0%} of held-out real images {among}scored >= threshold"


def threshold_and_validation(cfg, vsamples: Sequence[Sample], vy: np.ndarray, vs: np.ndarray,
                             threshold: float | None = None) -> tuple[float, dict | None, dict]:
    """The threshold for `cfg.target_fpr` on the held-out reals (of `cfg.calibrate_on` sources when
    given) unless one is given, and the validation metrics at it: overall (with per-generator) and per source."""
    val_metrics, by_source = None, {}
    calib = (vy == REAL) & np.array([not cfg.calibrate_on or s.source in map(str, cfg.calibrate_on)
                                     for s in vsamples])
    if threshold is None:
        threshold = threshold_at_fpr(vs[calib], cfg.target_fpr) if calib.any() else 0.5
    if len(set(vy)) == 2:
        val_metrics = summary(vy, vs, threshold)
        val_metrics["per_generator"] = metrics_by_generator(vy, vs, [s.generator for s in vsamples], threshold)
    for src in sorted({s.source for s in vsamples if s.source}):
        m = np.array([s.source == src for s in vsamples])
        by_source[src] = summary(vy[m], vs[m], threshold)
    return threshold, val_metrics, by_source


def head_options(cfg, backbone) -> dict:
    """Options the head needs from the backbone: the block sizes of a multi-layer feature vector
    (a head that `needs_blocks`), read off one forward pass (backbones/spec.py block_widths)."""
    opts = dict(cfg.head_options)
    if head_class(cfg.method).needs_blocks and "blocks" not in opts:
        spec = backbone.spec
        if not spec.layers or cfg.modality != "image":
            raise ValueError(f"method {cfg.method} reads several layers' class tokens: use an image backbone spec "
                             "with ?layers=..., e.g. vit-s14-focus?layers=3,6,9")
        opts["blocks"] = block_widths(backbone)
    return opts


def out_of_source_scores(cfg, backbone, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                         sources: np.ndarray, clean: np.ndarray, log=print) -> tuple | None:
    """(labels, scores, sources) of each training source's clean images scored by a head fitted on
    the other sources' rows: how a source the detector never saw is scored. None with fewer than
    two sources. The same head and options as the run's; images only (no captions)."""
    names = sorted(set(sources))
    if len(names) < 2:
        return None
    parts = []
    for name in names:
        held, rest = (sources == name) & clean, sources != name
        if len(set(y[rest])) < 2:  # the others alone cannot train a detector: this source is not scored
            continue
        head = make_head(cfg.method, seed=cfg.seed, **head_options(cfg, backbone))
        head.fit(X[rest], y[rest], groups[rest])
        parts.append((y[held], head.predict(X[held]), sources[held]))
        log(f"out-of-source scores: {name} ({int(held.sum())} images) by a head fitted without it")
    return tuple(np.concatenate(p) for p in zip(*parts)) if parts else None


def run_metadata(cfg, train: Sequence[Sample], val: Sequence[Sample], val_metrics: dict | None, by_source: dict,
                 fit: dict, skipped: int, **extra) -> dict:
    """The record every detector keeps of its run: when and with what, on which data, its threshold
    rule and validation metrics, what fitting said, the images skipped; `extra` is the method's own."""
    return {"trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "fakescope_version": __version__,
            "data": [str(Path(d)) for d in cfg.data], "train": describe(train), "validation": describe(val),
            "threshold_rule": threshold_rule(cfg), "target_fpr": cfg.target_fpr, **extra,
            "validation_metrics": val_metrics, "validation_by_source": by_source, "fit": fit, "skipped_images": skipped,
            "machine": platform.platform()}


__all__ = ["describe", "held_out_split", "load_sources", "run_metadata", "source_parts", "subset_of_parts",
           "threshold_and_validation", "threshold_rule", "training_samples"]
