""""Which features expose fakes?" The same head trained over several backbones on the
same images, validated on the same held-out split and tested on the same sets: one table
(`compare_backbones`); saved detectors scored on the same test sets (`compare_detectors`).

This is the comparison at the heart of "Parents and Children" (CLIP-style contrastive
features vs ImageNet classification features), run on the user's data.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..training.fit import TrainConfig, fit_detector, load_sources
from .report import evaluate_detector, public

COLUMNS = ("auc", "ap", "accuracy", "acc_real", "acc_fake")


def compare_backbones(backbones: Sequence[str], cfg: TrainConfig, tests: Sequence[str] = (),
                      save_dir: str | Path | None = None, log=print) -> list[dict]:
    """One row per backbone: validation metrics (threshold set as in `train`) and, per test
    source, metrics at that threshold. Samples are loaded once and shared by all backbones."""
    samples = load_sources(cfg.data, cfg.per_class, cfg.seed)
    test_sets = {src: load_sources([src], cfg.per_class, cfg.seed) for src in tests}
    rows = []
    for spec in backbones:
        det = fit_detector(replace(cfg, backbone=spec), samples, log=log)
        if save_dir:
            det.save(Path(save_dir) / spec.replace(":", "_").replace("/", "_").replace("?", "_"))
        row = {"backbone": spec, "method": cfg.method, "dim": int(det.head.config().get("dim", 0)),
               "threshold": det.threshold, "validation": det.metadata.get("validation_metrics") or {},
               "tests": {src: public(evaluate_detector(det, test_sets[src], cfg.cache)) for src in tests}}
        rows.append(row)
    return rows


def compare_detectors(models: Sequence[str | None], tests: Sequence[str], per_class: int | None = None,
                       seed: int = 0, cache: str | None = None) -> list[dict]:
    """Rows as `compare_backbones` makes them, for saved detectors (None: the shipped default)
    scored at their own threshold on each test source."""
    from ..detector import load_detector

    test_sets = {src: load_sources([src], per_class, seed) for src in tests}
    rows = []
    for ref in models:
        det = load_detector(ref)
        rows.append({"backbone": f"{det.name} ({det.spec.name})", "method": det.head.method,
                     "dim": int(det.head.config().get("dim", 0) or 0), "threshold": det.threshold,
                     "validation": det.metadata.get("validation_metrics") or {},
                     "tests": {src: public(evaluate_detector(det, ts, cache)) for src, ts in test_sets.items()}})
    return rows
