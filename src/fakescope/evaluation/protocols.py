"""Held-out validation: leave one group out, refit, test on it. One implementation (`run_folds`)
serves every protocol here; `fakescope leave-out`, `validate`, and the benchmarks call these.

A detector that separates its training sources tells little: it may have learned where the
images came from. These protocols ask what a user needs to know instead:

  leave-one-generator-out  for each generator g of a test source: refit without any image of g
                         (from every source); threshold on the test source's held-out reals;
                         test its held-out reals against its held-out images of g ("held out":
                         the hashed split `fit_detector` makes, so no test image was trained on).
  leave-one-source-out   train on every source but one (the recipe unchanged: same split,
                         same threshold rule, set on the *training* sources' held-out reals),
                         then score the held-out source: ROC-AUC, AP, accuracy on its reals
                         and fakes at that threshold.
  device-held-out photos real camera photos grouped by device (`real/<device>/<file>`),
                         folded so that no device is in training and test at once: the share
                         of held-out devices' photos called fake at the threshold (the
                         false-positive rate a newsroom sees on its own camera's photos).

All refit through `fit_detector`, the path `fakescope train` takes, and read features through
the cache, so a refit on cached features costs seconds.
"""
from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.samples import FAKE, REAL, Sample  # noqa: F401  (Sample: re-exported for callers)
from ..data.splits import fold_of, split_samples
from ..training.fit import TrainConfig, fit_detector, load_sources
from .report import evaluate_detector


@dataclass
class NamedSource:
    name: str
    samples: list[Sample]


@dataclass
class Fold:
    """One refit of a protocol: trained on `train`, tested on `test` (never in `train`)."""
    name: str
    train: list[Sample]
    test: list[Sample]


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
    return fold_of(device, folds, seed)


ROW_KEYS = ("n", "n_real", "n_fake", "auc", "ap", "accuracy", "acc_real", "acc_fake", "tpr_at_5fpr", "threshold")


def held_out_row(det, samples: Sequence[Sample], cache, per_image: dict | None = None) -> dict:
    """Metrics at the detector's threshold, the false-positive rate, and with its "uncertain"
    rule the coverage and the accuracy / FPR on the images it answers (selective classification).
    `per_image`, when given, receives the arrays behind them (`fold_arrays`)."""
    m = evaluate_detector(det, samples, cache, intervals=False)
    if per_image is not None:
        per_image.update(fold_arrays(det, m))
    row = {k: m.get(k) for k in ROW_KEYS}
    row["fpr"] = None if not m.get("n_real") else 1.0 - float(m["acc_real"])
    row["errors"] = len(m["errors"])
    if m.get("selective"):
        row["selective"] = m["selective"]
    if m.get("risk_coverage"):  # the best any rule that abstains on the least confident can do
        row["risk_coverage"] = m["risk_coverage"]
    row["generators"] = generator_rows(m)
    return row


def generator_rows(m: dict) -> dict[str, dict]:
    """A held-out source's fakes by generator: how many, the ROC-AUC of all its reals against
    them, the share found at the threshold and, with "uncertain" on, the share answered and the
    share found among those (which generator the held-out number hides)."""
    gens = np.array([g or "unnamed" for g in m.get("_generators", [])], dtype=object)
    labels, scores = np.asarray(m.get("_labels", [])), np.asarray(m.get("_scores", []))
    reasons, said = m.get("_reasons"), np.array(m.get("_verdicts", []), dtype=object)
    answered = np.array([not r for r in reasons]) if reasons is not None else None
    rows = {}
    for g, summary in (m.get("per_generator") or {}).items():
        mine = (labels == 1) & (gens == g)
        rows[g] = {"n": int(mine.sum()), "auc": summary.get("auc"), "found": summary.get("acc_fake")}
        if answered is not None:
            shown = mine & answered
            rows[g]["answered"] = float(shown.sum() / mine.sum())
            rows[g]["answered_found"] = float((said[shown] == "fake").mean()) if shown.any() else None
    return rows


def fold_arrays(det, m: dict) -> dict[str, np.ndarray]:
    """One fold's per-image results, for `fakescope validate --scores`: each held-out image's path,
    label, score, "uncertain" reason ("" = answered) and verdict; a fused detector's experts' scores and its
    referees' cuts and vetoes; the refit's threshold and band; and, when
    the band was cut from out-of-source scores, those scores (labels, scores, source names)."""
    rule = det.uncertainty
    out = {"paths": np.array(m.get("_paths", []), dtype=str), "labels": np.asarray(m.get("_labels", [])),
           "scores": np.asarray(m.get("_scores", []), np.float64),
           "reasons": np.array([r or "" for r in m.get("_reasons", [""] * len(m.get("_labels", [])))], dtype=str),
           "threshold": np.array(det.threshold)}
    if "_verdicts" in m:
        out["verdicts"] = np.array(m["_verdicts"], dtype=str)
    for name, values in (m.get("_experts") or {}).items():  # NaN where the expert does not speak
        out[f"expert.{name}"] = np.asarray(values, np.float64)
    for e in getattr(det.head, "experts", None) or []:  # a referee's cut (heads/fusion.py)
        for key in ("cut", "veto"):
            if e.get(key) is not None:
                out[f"{key}.{e['name']}"] = np.array(float(e[key]))
    if rule is not None:
        out["band"] = np.array(rule.cuts(det.threshold))
        if rule.out_of_source is not None:
            labels, scores, sources = rule.out_of_source
            out.update({"oos_labels": np.asarray(labels), "oos_scores": np.asarray(scores, np.float64),
                        "oos_sources": np.asarray(sources).astype(str)})
    return out


def save_fold_arrays(path, per_image: dict[str, dict]) -> None:
    """Every fold's arrays in one .npz, keyed "<fold>/<name>" (np.load(path)["wild/scores"])."""
    from ..files import atomic_write
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{fold}/{k}": v for fold, arrays in per_image.items() for k, v in arrays.items()})
    atomic_write(Path(path), buf.getvalue())  # a run cut short leaves no half-written file


def accuracy_at_coverage(curve: dict | None, coverage: float = 0.7) -> float | None:
    """Accuracy on the most confident `coverage` share, read off a risk-coverage curve."""
    if not curve:
        return None
    return next((a for c, a in zip(curve["coverage"], curve["accuracy"]) if c >= coverage - 1e-9), None)


def without_families_of(train: Sequence[Sample], test: Sequence[Sample]) -> list[Sample]:
    """The training samples minus those that name a test image as their family (an explicit
    `group`, e.g. an aligned re-synthesis of a photo, or a CocoGlide edit): a photo held out of
    training must not come back through its twin."""
    held = {s.group_key() for s in test}
    return [s for s in train if s.group is None or s.group not in held]


def run_folds(cfg: TrainConfig, folds: Sequence[Fold], calibrate_on: Sequence[str] | None = None,
              log: Callable = print, per_image: dict | None = None) -> dict[str, dict]:
    """Refit `cfg` on each fold's training samples and test it on the fold's test samples. The
    threshold is set on the held-out reals of `calibrate_on` (default: every training source).
    `per_image`, when given, receives each fold's arrays under its name (`fold_arrays`)."""
    results = {}
    for fold in folds:
        t0 = time.time()
        train = without_families_of(fold.train, fold.test)
        if len(train) < len(fold.train):
            log(f"  {fold.name}: {len(fold.train) - len(train)} training images left out: derived from test images")
        names = sorted({s.source for s in train})
        det = fit_detector(replace(cfg, data=names, calibrate_on=list(calibrate_on or names)), train, log=log)
        row = held_out_row(det, fold.test, cfg.cache, None if per_image is None else per_image.setdefault(fold.name, {}))
        row["seconds"] = round(time.time() - t0, 1)
        results[fold.name] = row
        log(f"  {fold.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                          if isinstance(v, float) and k != "seconds"))
    return results


def leave_one_generator_out(cfg: TrainConfig, samples: Sequence[Sample], test_source: str | None = None,
                            log: Callable = print) -> dict:
    """One fold per generator g of `test_source`'s fakes (default: of every source): trained
    without any image of g, tested on the held-out reals of the test source vs its held-out
    images of g, at the threshold set on those held-out reals (`cfg.target_fpr`). Returns the
    protocol, the rows by generator, and the mean ROC-AUC / AP."""
    held = split_samples(samples, cfg.val_fraction, cfg.seed)  # by group, as every refit splits
    tested = [s for s, h in zip(samples, held) if h and (test_source is None or s.source == str(test_source))]
    gens = sorted({s.generator for s in samples if s.label == FAKE and s.generator
                   and (test_source is None or s.source == str(test_source))})
    if len(gens) < 2:
        where = f"{test_source}: " if test_source else ""
        raise ValueError(f"{where}leave-one-generator-out needs fakes of at least two named generators (found {gens})")
    folds = [Fold(g, [s for s in samples if not (s.label == FAKE and s.generator == g)],
                  [s for s in tested if s.label == REAL or s.generator == g]) for g in gens]
    log(f"leave one generator out of {len(samples)} images: {', '.join(gens)}")
    rows = run_folds(cfg, folds, [str(test_source)] if test_source else None, log=log)
    aucs = [r["auc"] for r in rows.values() if r["auc"] is not None]
    aps = [r["ap"] for r in rows.values() if r["ap"] is not None]
    return {"data": list(map(str, cfg.data)), "test_source": None if test_source is None else str(test_source),
            "backbone": cfg.backbone, "method": cfg.method, "options": cfg.head_options,
            "val_fraction": cfg.val_fraction, "seed": cfg.seed, "per_generator": rows,
            "mean_auc": float(np.mean(aucs)) if aucs else None, "mean_ap": float(np.mean(aps)) if aps else None}


def leave_one_source_out(cfg: TrainConfig, sources: Sequence[NamedSource], always_train: Sequence[NamedSource] = (),
                         log: Callable = print, per_image: dict | None = None) -> dict[str, dict]:
    """For each source: fit on all other sources (+ `always_train`, e.g. camera photos with no
    fakes), threshold on their held-out reals, test on the whole held-out source."""
    extra = [s for src in always_train for s in src.samples]
    folds = [Fold(held.name, [s for src in sources if src is not held for s in src.samples] + extra, held.samples)
             for held in sources]
    for fold in folds:
        log(f"leave out {fold.name}: train on {', '.join(sorted({s.source for s in fold.train}))}")
    return run_folds(cfg, folds, log=log, per_image=per_image)


def device_held_out_fpr(cfg: TrainConfig, photos: Sequence[NamedSource], others: Sequence[NamedSource],
                        folds: int = 5, seed: int = 0, log: Callable = print, per_image: dict | None = None) -> dict:
    """Camera photos folded by device: each fold's devices are left out of training (the other
    sources and the other devices' photos are kept) and their photos scored at the refit's
    threshold. Returns the pooled false-positive rate and one row per fold."""
    pool = [s for src in photos for s in src.samples if s.label == REAL]
    fold_of = [device_fold(device_of(s), folds, seed) for s in pool]
    folds_ = [Fold(str(k), [s for s, f in zip(pool, fold_of) if f != k] + [s for src in others for s in src.samples],
                   [s for s, f in zip(pool, fold_of) if f == k]) for k in range(folds)]
    rows = []
    for fold in (f for f in folds_ if f.test):
        arrays = None if per_image is None else per_image.setdefault(f"device-{fold.name}", {})
        row = run_folds(cfg, [fold], log=log, per_image=None if arrays is None else {fold.name: arrays})[fold.name]
        row["fold"], row["devices"] = int(fold.name), len({device_of(s) for s in fold.test})
        rows.append(row)
        log(f"  device fold {fold.name}: {row['devices']} devices, {row['n']} photos, FPR {row['fpr']:.3f}")
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
             "| answered FPR | acc. of the 70% most confident |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
    for name, r in loso.items():
        sel = r.get("selective") or {}
        lines.append(f"| {name} | {r['n_real']} | {r['n_fake']} | {f(r['auc'])} | {f(r['ap'])} | "
                     f"{f(r['acc_real'])} | {f(r['acc_fake'])} | {f(sel.get('coverage'))} | "
                     f"{f(sel.get('answered_accuracy'))} | {f(sel.get('answered_fpr'))} | "
                     f"{f(accuracy_at_coverage(r.get('risk_coverage')))} |")
    aucs = [r["auc"] for r in loso.values() if r["auc"] is not None and not np.isnan(r["auc"])]
    if aucs:
        lines.append(f"| **mean / min** | | | {np.mean(aucs):.3f} / {min(aucs):.3f} | | | | | | | |")
    gens = [(name, g, v) for name, r in loso.items() for g, v in (r.get("generators") or {}).items()]
    if len(gens) > len(loso):  # some source has several generators: which one the held-out row hides
        lines += ["", "| held out | generator | n fake | ROC-AUC (all its reals) | found | answered | found when answered |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {g} | {v['n']} | {f(v['auc'])} | {f(v['found'])} | {f(v.get('answered'))} | "
                  f"{f(v.get('answered_found'))} |" for name, g, v in gens]
    if devices and devices.get("n"):
        lines += ["", f"Camera photos held out by device: {devices['n']} photos from {devices['devices']} devices, "
                      f"{len(devices['folds'])} folds: **false-positive rate {devices['fpr']:.3f}**"]
        if devices.get("answered_fpr") is not None:
            lines.append(f"With \"uncertain\" on: {devices['coverage']:.3f} of them answered, "
                         f"false-positive rate {devices['answered_fpr']:.3f} on those.")
    return "\n".join(lines)


__all__ = ["Fold", "NamedSource", "accuracy_at_coverage", "device_fold", "device_held_out_fpr", "device_of", "fold_arrays",
           "generator_rows", "held_out_row", "leave_one_generator_out", "leave_one_source_out", "load_named", "markdown_table",
           "parse_named", "run_folds", "save_fold_arrays"]
