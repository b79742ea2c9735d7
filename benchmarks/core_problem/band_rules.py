"""Compare ways of placing the "uncertain" band on the folds of one `fakescope validate --scores` run (issue 17).

Each rule reads one fold's out-of-source scores (each training source scored by a head fitted
without it) and returns (low, high); the fold's held-out source is then answered where the score
is outside [low, high) and the fitted rule did not call the image unfamiliar. Printed per held-out
source: coverage / accuracy on the answered images, over a grid of rates (miss rate x confident-fake
FPR) and three ways of combining the sources; for the camera-photo folds: the share answered and
the false-positive rate on it. Last, a nested check: the rule chosen on two photo sources, judged on
the third. docs/results.md 11.7.

    fakescope validate <recipe> --uncertain-band sources ... --scores runs/band/v5-folds.npz
    python benchmarks/core_problem/band_rules.py runs/band/v5-folds.npz
"""
from __future__ import annotations

import sys

import numpy as np

from fakescope.uncertainty import UNFAMILIAR, per_source_cuts, source_band


def pooled(y, s, src, t, miss, fpr):  # v5's rule ("sources"): every source weighs the same, one pooled quantile
    return source_band(y, s, src, t, miss, fpr)


def median_of_sources(y, s, src, t, miss, fpr):  # measured only
    lows, highs = per_source_cuts(y, s, src, t, miss, fpr)
    return (float(np.median(lows)) if lows else t), (float(np.median(highs)) if highs else t)


def mean_of_sources(y, s, src, t, miss, fpr):  # the "per-source" band, v6's
    return source_band(y, s, src, t, miss, fpr, per_source=True)


RULES = {"pooled": pooled, "median": median_of_sources, "mean": mean_of_sources}
TARGET_SOURCES = ("wild", "sd512", "people")  # photo sources; CIFAKE held out is near chance whatever the band


def answered(data, fold: str, rule, miss: float, fpr: float):
    """(answered mask, predictions, labels) of a fold's held-out images under a rule's band."""
    g = lambda k: data[f"{fold}/{k}"]  # noqa: E731
    t = float(g("threshold"))
    low, high = rule(g("oos_labels"), g("oos_scores"), g("oos_sources"), t, miss, fpr)
    s = g("scores")
    return (g("reasons") != UNFAMILIAR) & ~((s >= low) & (s < max(high, t))), s >= t, g("labels")


def main() -> None:
    data = np.load(sys.argv[1])
    folds = sorted({k.split("/")[0] for k in data.files})
    grid = [(name, miss, fpr) for name in RULES for miss in (0.05, 0.10, 0.15, 0.20) for fpr in (0.02, 0.05, 0.10)]
    cells = {}
    for name, miss, fpr in grid:
        line, cam = [], [0, 0, 0]  # answered, photos, false positives among answered
        for fold in folds:
            ans, pred, y = answered(data, fold, RULES[name], miss, fpr)
            if fold.startswith("device"):
                cam = [cam[0] + int(ans.sum()), cam[1] + len(y), cam[2] + int((pred & ans).sum())]
                continue
            acc = float((pred[ans] == (y[ans] == 1)).mean()) if ans.any() else float("nan")
            cells[(name, miss, fpr, fold)] = (float(ans.mean()), acc)
            line.append(f"{fold} {ans.mean():.3f}/{acc:.3f}")
        met = sum(cells[(name, miss, fpr, f)][0] >= 0.7 and cells[(name, miss, fpr, f)][1] >= 0.95
                  for f in TARGET_SOURCES if (name, miss, fpr, f) in cells)
        camera = f"camera {cam[0] / cam[1]:.3f}/{cam[2] / max(cam[0], 1):.3f}" if cam[1] else ""
        print(f"{name:6s} miss {miss:.2f} fpr {fpr:.2f}  target met on {met}  " + "  ".join(line) + "  " + camera)

    # nested: the rule and rates chosen on two photo sources (most targets met, then the margin),
    # judged on the third: how much of the choice is fitted to the folds it was made on
    def margin(c, f):
        cov, acc = cells[(*c, f)]
        return min(cov - 0.7, 5 * (acc - 0.95))
    for held in (f for f in TARGET_SOURCES if f in folds):
        others = [f for f in TARGET_SOURCES if f != held and f in folds]
        best = max(grid, key=lambda c: (sum(margin(c, f) >= 0 for f in others), np.mean([margin(c, f) for f in others])))
        cov, acc = cells[(*best, held)]
        print(f"chosen without {held}: {best[0]} miss {best[1]} fpr {best[2]} -> {held} {cov:.3f}/{acc:.3f}")


if __name__ == "__main__":
    main()
