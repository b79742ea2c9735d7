"""Two detectors' verdicts on the same images, side by side: how many scores and verdicts differ,
and each one's answered share / accuracy / FPR with "uncertain" on. Used to check that a fused
default (cuts=first) is its first expert's detector outside the thumbnail domain (results.md 11.6).

    python benchmarks/core_problem/compare_verdicts.py MODEL_A MODEL_B DATA [DATA ...]
"""
from __future__ import annotations

import sys

import numpy as np

from fakescope.data.sources import load_labelled
from fakescope.detector import load_detector


def verdicts(model: str, samples) -> tuple[np.ndarray, list[str]]:
    det = load_detector(model)
    results = list(det.predict([s.data for s in samples]))
    return np.array([r.score for r in results], np.float64), [r.label for r in results]


def main(a: str, b: str, *data: str) -> None:
    for src in data:
        samples = list(load_labelled(src))
        y = np.array([s.label for s in samples])
        (sa, va), (sb, vb) = verdicts(a, samples), verdicts(b, samples)
        same = np.isclose(sa, sb, rtol=1e-5, atol=1e-6)
        print(f"{src}: {len(samples)} images; scores equal {same.mean():.3f}, max |diff| {np.abs(sa - sb).max():.2e}; "
              f"verdicts equal {np.mean([x == z for x, z in zip(va, vb)]):.3f}")
        for name, v in ((a, va), (b, vb)):
            v = np.array(v)
            answered = v != "uncertain"
            right = (v == np.where(y == 1, "fake", "real"))[answered]
            fpr = (v[(y == 0) & answered] == "fake").mean() if ((y == 0) & answered).any() else float("nan")
            print(f"  {name}: answered {answered.mean():.3f}, accuracy on answered {right.mean():.3f}, "
                  f"reals called fake among answered {fpr:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
