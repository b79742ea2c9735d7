"""Is "the experts disagree" a better reason to abstain than a low fused confidence? (issue 17, item 5)

For a fused detector on labelled images: the share its "uncertain" band answers and its accuracy
there; then, for cuts (lo, hi), the images where one expert says P(fake) >= hi and another < lo,
how often the fused verdict is right on them, and what abstaining on them too gives; last, the
accuracy of the most confident images by fused score at several coverages (the best any
confidence band can do), to compare at equal coverage. results.md 11.6.

    python benchmarks/core_problem/experts_disagree.py MODEL DATA [--cache .cache/features]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from fakescope.data.sources import load_labelled
from fakescope.detector import load_detector
from fakescope.features import FeatureCache, extract


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--cache", default=".cache/features")
    args = ap.parse_args()
    det = load_detector(args.model)
    samples = list(load_labelled(args.data))
    rows, X, _ = extract(samples, det.backbone, FeatureCache(args.cache, det.spec) if args.cache else None)
    y = np.array([samples[i].label for i, _ in rows])
    fused, experts = det.head.predict_with_experts(X)
    right = (fused >= det.threshold).astype(int) == y
    band = ((fused >= det.uncertainty.low) & (fused < det.uncertainty.high) if det.uncertainty is not None
            else np.zeros(len(y), bool))
    print(f"{args.data}: {len(y)} images; 'uncertain' band answers {(~band).mean():.3f} at accuracy {right[~band].mean():.3f}")
    P = np.stack([experts[n] for n in experts], 1)
    for lo, hi in ((0.1, 0.9), (0.2, 0.8), (0.3, 0.7)):
        dis = np.zeros(len(y), bool)
        for a, b in itertools.permutations(range(P.shape[1]), 2):
            dis |= (P[:, a] >= hi) & (P[:, b] < lo)  # NaN (an abstaining expert) compares False
        keep = ~(band | dis)
        print(f"  experts disagree (one >= {hi}, another < {lo}): {dis.mean():.3f} of images, fused verdict right on "
              f"{right[dis].mean() if dis.any() else float('nan'):.3f} of them; band + disagreement answers "
              f"{keep.mean():.3f} at accuracy {right[keep].mean():.3f}")
    z = np.log(fused / (1 - fused)) - np.log(det.threshold / (1 - det.threshold))
    order = np.argsort(-np.abs(z))
    for cov in (0.95, 0.9, 0.8, 0.7):
        print(f"  the {cov:.0%} most confident by fused score: accuracy {right[order[:int(cov * len(y))]].mean():.3f}")


if __name__ == "__main__":
    main()
