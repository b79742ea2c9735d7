"""Would weighting the few camera photos more make an unseen camera collection safer? A screen (issue 17).

Reads the cached features of v6's CLIP columns (`clip-b16?layers=6,8,10,12`, the clean and the
thumbnail view of every image, as `fakescope validate` with v6's recipe cached them) and fits the
screens' probe (layer_subsets.py: standardised logistic regression, C = 0.01) with each camera
photo (`photos-digicam`, `photos-mei`) weighing W times an ordinary image. For each W: each photo
source held out (ROC-AUC, and the shares of reals / fakes right at the cut), and each camera
collection held out entirely (the share of its photos called fake). The cut calls 5% of the training
sources' clean reals fake. A screen on cached features, not the protocol: results.md 11.14.

    python benchmarks/core_problem/camera_weight.py
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from layer_subsets import cached_features

SPEC = "clip-b16?layers=6,8,10,12"
CAMERAS = ("digicam", "mei")
HELD_OUT = ("cifake", "wild", "sd512", "people")
WEIGHTS = (1, 3, 10, 30)


def fit(data: dict, train: list[str], weight: float):
    """The probe on `train` with camera rows weighing `weight`; its decision function and the cut."""
    X = np.concatenate([data[n][0] for n in train])
    y = np.concatenate([data[n][1] for n in train])
    w = np.concatenate([np.full(len(data[n][1]), weight if n in CAMERAS else 1.0) for n in train])
    scaler = StandardScaler().fit(X)
    probe = LogisticRegression(C=0.01, max_iter=500).fit(scaler.transform(X), y, sample_weight=w)
    score = lambda A: probe.decision_function(scaler.transform(A))  # noqa: E731
    reals = np.concatenate([score(data[n][0][(data[n][1] == 0) & (data[n][2] == 0)]) for n in train])
    return score, float(np.quantile(reals, 0.95))


def main() -> None:
    data = cached_features(SPEC)
    print("camera weight".ljust(14) + "".join(f"{h + ': AUC / real / fake':>28}" for h in HELD_OUT)
          + "".join(f"{'all of ' + c + ' unseen':>22}" for c in CAMERAS))
    for weight in WEIGHTS:
        cells = []
        for held in HELD_OUT:
            score, cut = fit(data, [n for n in data if n != held], weight)
            X, y, view = data[held]
            s, y = score(X[view == 0]), y[view == 0]
            cells.append(f"{roc_auc_score(y, s):.3f} / {(s[y == 0] < cut).mean():.2f} / {(s[y == 1] >= cut).mean():.2f}")
        for camera in CAMERAS:
            score, cut = fit(data, [n for n in data if n != camera], weight)
            X, _, view = data[camera]
            cells.append(f"{(score(X[view == 0]) >= cut).mean():.3f}")
        print(f"{weight:<14}" + "".join(f"{c:>28}" for c in cells[:len(HELD_OUT)])
              + "".join(f"{c:>22}" for c in cells[len(HELD_OUT):]), flush=True)


if __name__ == "__main__":
    main()
