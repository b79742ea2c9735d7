"""Which training images teach a thumbnail source the model never saw? A screen on CIFAKE (issue 17).

With CIFAKE held out, the default's recipe reaches about 0.72 ROC-AUC on it. This screen fits one
logistic probe (standardised, C = 0.01) on v6's columns (embedding + class tokens of blocks 6-12,
cached by `layer_subsets.py`'s run) from different training rows: every other source with its
clean and thumbnail views, the thumbnail views alone, the clean images alone, and each fake source
alone (with and without the real-only sources); then scores CIFAKE's clean images. A screen, not
the protocol: results.md 11.9.

    python benchmarks/core_problem/thumbnail_sources.py
"""
from __future__ import annotations

import numpy as np

from layer_subsets import BLOCKS, cached_features, probe_auc  # this folder's cached rows of v5's recipe, its probe

COLUMNS = np.concatenate([np.arange(BLOCKS[b].start, BLOCKS[b].stop) for b in ("emb", "L6", "L8", "L10", "L12")])
REAL_ONLY = ["cocoglide-real", "digicam", "mei"]


def main() -> None:
    data = cached_features()
    X_test, y_test, views = data["cifake"]
    clean = views == 0
    others = [k for k in data if k != "cifake"]
    screens = {"every other source, both views": (others, (0, 1)),
               "every other source, thumbnail views": (others, (1,)),
               "every other source, clean images": (others, (0,))}
    for fake_source in ("wild", "sd512", "people"):
        screens[f"{fake_source} + the real-only sources, both views"] = ([fake_source, *REAL_ONLY], (0, 1))
        screens[f"{fake_source} alone, thumbnail views"] = ([fake_source], (1,))
    print(f"{'trained on':<50} CIFAKE ROC-AUC   rows")
    for name, (sources, kept) in screens.items():
        rows = [np.isin(data[k][2], kept) for k in sources]
        X = np.concatenate([data[k][0][r][:, COLUMNS] for k, r in zip(sources, rows)])
        y = np.concatenate([data[k][1][r] for k, r in zip(sources, rows)])
        auc = probe_auc(X, y, X_test[clean][:, COLUMNS], y_test[clean])
        print(f"{name:<50} {auc:.3f}   {len(y)}", flush=True)


if __name__ == "__main__":
    main()
