""""Which features expose fakes?" The same head trained over several backbones on the
same images, validated on the same held-out split and tested on the same sets: one table.

This is the comparison at the heart of "Parents and Children" (CLIP-style contrastive
features vs ImageNet classification features), run on the user's data.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..train import TrainConfig, fit_detector, load_sources
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


def leave_generator_out(cfg: TrainConfig, log=print) -> dict:
    """Train without one generator at a time; test on the held-out reals vs all of that generator's images.

    The validation split is hashed on file names, so every refit holds out the same reals
    and sets its threshold on them; the left-out generator is never seen in training."""
    from ..data.samples import FAKE, REAL
    from ..train import split_by_image

    samples = load_sources(cfg.data, cfg.per_class, cfg.seed)
    held = split_by_image(samples, cfg.val_fraction, cfg.seed)
    gens = sorted({s.generator for s in samples if s.label == FAKE and s.generator})
    if len(gens) < 2:
        raise ValueError(f"leave-generator-out needs fakes of at least two named generators (found {gens})")
    held_reals = [s for s, h in zip(samples, held) if h and s.label == REAL]
    out = {}
    for g in gens:
        train = [s for s in samples if not (s.label == FAKE and s.generator == g)]
        det = fit_detector(cfg, train, log=log)
        test = held_reals + [s for s in samples if s.label == FAKE and s.generator == g]
        out[g] = public(evaluate_detector(det, test, cfg.cache))
        log(f"without {g}: AUC {out[g]['auc']:.4f} on {len(held_reals)} held-out reals vs {out[g]['n_fake']} {g} images")
    return out
