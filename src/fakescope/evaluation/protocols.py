"""Validation that predicts the real world: leave-one-source-out and device-held-out photos.

A detector that separates its training sources tells little: it may have learned where the
images came from. Two protocols ask what a user needs to know instead:

  leave-one-source-out   train on every source but one (the recipe unchanged: same split,
                         same threshold rule, set on the *training* sources' held-out reals),
                         then score the held-out source: ROC-AUC, AP, accuracy on its reals
                         and fakes at that threshold.
  device-held-out photos real camera photos grouped by device (`real/<device>/<file>`),
                         folded so that no device is in training and test at once: the share
                         of held-out devices' photos called fake at the threshold (the
                         false-positive rate a newsroom sees on its own camera's photos).

Both refit through `fit_detector`, the path `fakescope train` takes, and read features through
the cache, so a refit on cached features costs seconds. `fakescope validate` runs them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from ..data.samples import REAL, Sample  # noqa: F401  (Sample: re-exported for callers)
from ..features import FeatureCache, extract
from ..train import TrainConfig, fit_detector, load_sources
from ..uncertainty import selective_metrics
from .metrics import summary


@dataclass
class NamedSource:
    name: str
    samples: list[Sample]


def parse_named(entry: str) -> tuple[str, str]:
    """'wild=../data/wild/train.tar' -> ('wild', path); a bare path is named by its folder or stem."""
    if "=" in entry.split("?", 1)[0] and not entry.startswith(("hf:",)):
        name, path = entry.split("=", 1)
        return name.strip(), path.strip()
    stem = entry.rstrip("/").rsplit("/", 1)[-1]
    if stem in ("train.tar", "dev.tar", "val.tar"):  # ../shared/data/wild/train.tar -> wild
        stem = entry.rstrip("/").rsplit("/", 2)[-2]
    return stem.split(".")[0], entry


def load_named(entries: Sequence[str], per_class: int | None, seed: int = 0) -> list[NamedSource]:
    out = []
    for entry in entries:
        name, path = parse_named(entry)
        samples = load_sources([path], per_class, seed)
        for s in samples:
            s.source = name
        out.append(NamedSource(name, samples))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must differ: {names}; name them as NAME=PATH")
    return out


def device_of(sample: Sample) -> str:
    """The device folder of a camera photo: real/<device>/<file> (inside a tar or a folder)."""
    parts = sample.path.split("::")[-1].replace("\\", "/").split("/")
    if "real" in parts[:-1]:
        i = parts.index("real")
        if i + 1 < len(parts) - 1:
            # one key for one model however a set spells it ("Apple_iPhone-XR", "Apple iPhone XR")
            return re.sub(r"[^a-z0-9]", "", parts[i + 1].lower())
    return "unknown"


def device_fold(device: str, folds: int, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{device}".encode()).hexdigest()[:8], 16) % folds


def _test_row(det, samples: Sequence[Sample], cache) -> dict:
    """Metrics at the detector's threshold, and with its "uncertain" rule: coverage and the
    accuracy / false-positive rate on the images it answers (selective classification)."""
    fc = FeatureCache(cache, det.spec) if cache else None
    rows, X, failed = extract(samples, det.backbone, fc, desc="test features")
    y = np.array([samples[i].label for i, _ in rows])
    scores = det.head_scores(X) if len(rows) else np.zeros(0)
    m = summary(y, scores, det.threshold) if len(rows) else {"n": 0}
    keep = ("n", "n_real", "n_fake", "auc", "ap", "accuracy", "acc_real", "acc_fake", "threshold")
    row = {k: m.get(k) for k in keep}
    row["fpr"] = None if not m.get("n_real") else 1.0 - float(m["acc_real"])
    row["errors"] = len(failed)
    if det.uncertainty is not None and len(rows):
        reasons = [r for _, r in det.verdicts(scores, X)]
        row["selective"] = selective_metrics(y, scores, det.threshold, reasons)
    return row


def leave_one_source_out(cfg: TrainConfig, sources: Sequence[NamedSource], always_train: Sequence[NamedSource] = (),
                         log: Callable = print) -> dict[str, dict]:
    """For each source: fit on all other sources (+ `always_train`, e.g. camera photos with no
    fakes), threshold on their held-out reals, test on the whole held-out source."""
    results = {}
    for held in sources:
        train = [s for src in sources if src is not held for s in src.samples]
        train += [s for src in always_train for s in src.samples]
        names = sorted({s.source for s in train})
        log(f"leave out {held.name}: train on {', '.join(names)}")
        det = fit_detector(replace(cfg, data=names, calibrate_on=names), train, log=log)
        results[held.name] = _test_row(det, held.samples, cfg.cache)
        log(f"  {held.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[held.name].items()
                                           if isinstance(v, float)))
    return results


def device_held_out_fpr(cfg: TrainConfig, photos: Sequence[NamedSource], others: Sequence[NamedSource],
                        folds: int = 5, seed: int = 0, log: Callable = print) -> dict:
    """Camera photos folded by device: each fold's devices are left out of training (the other
    sources and the other devices' photos are kept) and their photos scored at the refit's
    threshold. Returns the pooled false-positive rate and one row per fold."""
    pool = [s for src in photos for s in src.samples if s.label == REAL]
    fold_of = [device_fold(device_of(s), folds, seed) for s in pool]
    rows = []
    for k in range(folds):
        test = [s for s, f in zip(pool, fold_of) if f == k]
        if not test:
            continue
        train = [s for s, f in zip(pool, fold_of) if f != k] + [s for src in others for s in src.samples]
        names = sorted({s.source for s in train})
        det = fit_detector(replace(cfg, data=names, calibrate_on=names), train, log=log)
        row = _test_row(det, test, cfg.cache)
        row["fold"], row["devices"] = k, len({device_of(s) for s in test})
        rows.append(row)
        log(f"  device fold {k}: {row['devices']} devices, {row['n']} photos, FPR {row['fpr']:.3f}")
    n = sum(r["n"] for r in rows)
    out = {"fpr": sum(r["fpr"] * r["n"] for r in rows) / n if n else None, "n": n, "folds": rows,
           "devices": len({device_of(s) for s in pool})}
    selective = [r for r in rows if r.get("selective")]
    if selective and n:  # pooled over folds: answered share, and the FPR on the answered photos
        answered = sum(r["selective"]["coverage"] * r["n"] for r in selective)
        out["coverage"] = answered / n
        out["answered_fpr"] = (sum(r["selective"]["answered_fpr"] * r["selective"]["coverage"] * r["n"]
                                   for r in selective if answered and r["selective"]["coverage"]) / answered
                               if answered else None)
    return out


def markdown_table(loso: dict[str, dict], devices: dict | None) -> str:
    lines = ["| held out | n real | n fake | ROC-AUC | AP | acc. real | acc. fake | coverage | answered acc. "
             "| answered FPR |", "|---|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
    for name, r in loso.items():
        sel = r.get("selective") or {}
        lines.append(f"| {name} | {r['n_real']} | {r['n_fake']} | {f(r['auc'])} | {f(r['ap'])} | "
                     f"{f(r['acc_real'])} | {f(r['acc_fake'])} | {f(sel.get('coverage'))} | "
                     f"{f(sel.get('answered_accuracy'))} | {f(sel.get('answered_fpr'))} |")
    aucs = [r["auc"] for r in loso.values() if r["auc"] is not None and not np.isnan(r["auc"])]
    if aucs:
        lines.append(f"| **mean / min** | | | {np.mean(aucs):.3f} / {min(aucs):.3f} | | | | | | |")
    if devices and devices.get("n"):
        lines += ["", f"Camera photos held out by device: {devices['n']} photos from {devices['devices']} devices, "
                      f"{len(devices['folds'])} folds: **false-positive rate {devices['fpr']:.3f}**"]
        if devices.get("answered_fpr") is not None:
            lines.append(f"With \"uncertain\" on: {devices['coverage']:.3f} of them answered, "
                         f"false-positive rate {devices['answered_fpr']:.3f} on those.")
    return "\n".join(lines)


__all__ = ["NamedSource", "device_fold", "device_held_out_fpr", "device_of", "leave_one_source_out", "load_named",
           "markdown_table", "parse_named"]
