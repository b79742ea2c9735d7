"""Which CLIP blocks generalise? A quick leave-one-source-out screen on cached features (issue 17).

Reads the cached features of `clip-b16?layers=2,4,6,8,10,12` (the clean view and the thumbnail view
of every training image, as `fakescope validate` with v5's recipe cached them) and, for column
subsets (the 512-d embedding, blocks), fits one logistic probe (standardised, C = 0.01, no L2 sweep,
no held-out split) on every source but one and scores the held-out source's clean images. A screen,
not the protocol: it tells which spec deserves a `fakescope validate` run. results.md 11.6.

    python benchmarks/core_problem/layer_subsets.py
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakescope.backbones import load_backbone
from fakescope.data.augment import AugmentConfig
from fakescope.features import FeatureCache, extract
from fakescope.training.common import load_sources

S, E = "../shared/data", "../data-extra"
SOURCES = {"cifake": f"{S}/cifake/train.tar", "wild": f"{S}/wild/train.tar", "sd512": f"{E}/sd512-imagenet/train.tar",
           "people": f"{E}/people-coco/train.tar", "cocoglide-real": f"{E}/cocoglide-real/train.tar",
           "digicam": f"{E}/photos-digicam/train.tar", "mei": f"{E}/photos-mei/train.tar"}
HELD_OUT = ["cifake", "wild", "sd512", "people"]
LAYERS = [2, 4, 6, 8, 10, 12]
BLOCKS = {"emb": slice(0, 512), **{f"L{k}": slice(512 + 768 * j, 512 + 768 * (j + 1)) for j, k in enumerate(LAYERS)}}
SUBSETS = {"emb": ["emb"], "emb+L2-12": list(BLOCKS), "L2-12": [f"L{k}" for k in LAYERS], "L2-6": ["L2", "L4", "L6"],
           "emb+L2-8": ["emb", "L2", "L4", "L6", "L8"], "L6-12": ["L6", "L8", "L10", "L12"],
           "emb+L6-12": ["emb", "L6", "L8", "L10", "L12"], "emb+L10-12": ["emb", "L10", "L12"]}


def cached_features(spec: str = "clip-b16?layers=" + ",".join(map(str, LAYERS))
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """source -> (features, labels, view of each row): the cached rows (clean + thumbnail view) of
    `spec` (v5's columns by default) as `fakescope validate` with that recipe cached them."""
    backbone = load_backbone(spec)
    cache = FeatureCache(".cache/features", backbone.spec)
    data = {}
    for name, path in SOURCES.items():
        samples = load_sources([path], 1000, 0)
        rows, X, _ = extract(samples, backbone, cache, views=range(2), augment=AugmentConfig(p_thumbnail=1.0))
        data[name] = (X, np.array([samples[i].label for i, _ in rows]), np.array([v for _, v in rows]))
    return data


def main() -> None:
    data = cached_features()
    loso_screen(data, {subset: np.concatenate([np.arange(BLOCKS[b].start, BLOCKS[b].stop) for b in blocks])
                       for subset, blocks in SUBSETS.items()})


def fit_probe(X: np.ndarray, y: np.ndarray):
    """The screens' probe: standardised logistic regression, C = 0.01, fitted on X, y."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300)).fit(X, y)


def probe_auc(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """The screens' probe fitted on X, y; its ROC-AUC on the test rows."""
    return float(roc_auc_score(y_test, fit_probe(X, y).predict_proba(X_test)[:, 1]))


def loso_screen(data: dict, subsets: dict[str, np.ndarray], held_out=HELD_OUT) -> None:
    """Per column subset: a probe fitted on every source but one, the held-out source's clean
    images scored (ROC-AUC), a row per subset. data: source -> (X, labels, view of each row)."""
    print("columns".ljust(20) + "".join(f"{h:>8}" for h in held_out) + "    mean")
    for subset, cols in subsets.items():
        aucs = []
        for held in held_out:
            rest = [k for k in data if k != held]
            X = np.concatenate([data[k][0][:, cols] for k in rest])
            y = np.concatenate([data[k][1] for k in rest])
            Xh, yh, views = data[held]
            clean = views == 0
            aucs.append(probe_auc(X, y, Xh[clean][:, cols], yh[clean]))
        print(subset.ljust(20) + "".join(f"{a:8.3f}" for a in aucs) + f"   {np.mean(aucs):.3f}", flush=True)

if __name__ == "__main__":
    main()
