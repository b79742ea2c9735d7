"""Issue 19: the published configurations beside fakescope's, on features already in the cache.

Reads `clip-b16` (or any backbone's) features of CIFAKE train (the cached balanced subset),
CIFAKE val and the wild train split from the feature cache only: nothing is recomputed, and a
sample that is not cached is left out (the counts are printed). Training: the cached CIFAKE train
images + the wild images outside the default 15% validation split (data.splits.split_samples, seed 0);
tests: CIFAKE val and that wild validation split. Each row prints ROC-AUC / AP per test and the
fit time. `--logo`: leave one wild generator out instead: for each generator g, train without any
image of g, test the wild validation reals against every image of g; prints the AUC per g and
the mean.

    python benchmarks/paper_configs.py --group robust-mlp --out runs/i19/robust-mlp.json
    python benchmarks/paper_configs.py --group code-heads --out runs/i19/code-heads.json
    python benchmarks/paper_configs.py --group robust-mlp --logo --rows "default (alpha 0.8 = worst 80%)"
    python benchmarks/paper_configs.py --group robust-mlp --rows "purdue preset;default, no SAM"
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fakescope.backbones import parse_spec
from fakescope.data.sources import load_labelled
from fakescope.evaluation.metrics import average_precision, roc_auc
from fakescope.features import FeatureCache, sha_of
from fakescope.heads import make_head
from fakescope.data.splits import split_samples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

GROUPS = {
    "robust-mlp": [
        ("default (alpha 0.8 = worst 80%)", "robust-mlp", {}),
        ("default, old alpha reading (alpha 0.8 = worst 20%)", "robust-mlp", {"alpha_convention": "quantile"}),
        ("default, no SAM", "robust-mlp", {"sam": False}),
        ("default, CVaR only (gamma 1)", "robust-mlp", {"gamma": 1.0}),
        ("default, AUC only (gamma 0)", "robust-mlp", {"gamma": 0.0}),
        ("default, BCE only (gamma 1, alpha 1)", "robust-mlp", {"gamma": 1.0, "alpha": 1.0}),
        ("purdue preset", "robust-mlp", {"preset": "purdue"}),
        ("purdue preset, no SAM", "robust-mlp", {"preset": "purdue", "sam": False}),
    ],
    "code-heads": [
        ("knn k=1 (CoDE)", "knn", {"k": 1}),
        ("knn k=10 weighted (fakescope)", "knn", {"k": 10}),
        ("logistic C 0.316 balanced, raw (CoDE)", "linear", {"C": 0.316, "standardize": False}),
        ("logistic, L2 swept, standardised (fakescope)", "linear", {}),
        ("ocsvm-poly nu 0.1 on reals (CoDE)", "ocsvm-poly", {}),
        ("ocsvm RBF random features on reals (fakescope)", "ocsvm", {}),
        ("distance to real centre", "distance", {}),
    ],
}


def cached_features(samples, cache):
    shas = [sha_of(s) for s in samples]
    keep = [i for i, h in enumerate(shas) if h is not None and h in cache]
    X = cache.get([shas[i] for i in keep]) if keep else np.zeros((0, 0), np.float32)
    return [samples[i] for i in keep], np.asarray(X, np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="clip-b16")
    ap.add_argument("--group", choices=sorted(GROUPS), required=True)
    ap.add_argument("--rows", default=None, help="row names to run, separated by ; (default: all)")
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".cache" / "features"))
    ap.add_argument("--logo", action="store_true", help="leave one wild generator out (see the module doc)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    cache = FeatureCache(args.cache, parse_spec(args.backbone))
    parts = {}
    for name in ("cifake/train.tar", "cifake/val.tar", "wild/train.tar"):
        parts[name] = cached_features(list(load_labelled(SHARED / name)), cache)
        s, X = parts[name]
        print(f"{name}: {len(s)} cached samples ({sum(x.label for x in s)} fake)", flush=True)
    wild_s, wild_X = parts["wild/train.tar"]
    held = split_samples(wild_s, 0.15, 0)
    ct_s, ct_X = parts["cifake/train.tar"]
    X = np.concatenate([ct_X, wild_X[~held]])
    y = np.array([s.label for s in ct_s] + [s.label for s, h in zip(wild_s, held) if not h])
    tests = {"cifake_val": (parts["cifake/val.tar"][1], np.array([s.label for s in parts["cifake/val.tar"][0]])),
             "wild_heldout": (wild_X[held], np.array([s.label for s, h in zip(wild_s, held) if h]))}
    print(f"train {len(y)} ({int(y.sum())} fake); " + ", ".join(f"{k} {len(v[1])}" for k, v in tests.items()), flush=True)

    wanted = None if args.rows is None else {r.strip() for r in args.rows.split(";")}
    report = {"backbone": args.backbone, "n_train": int(len(y)), "protocol": "logo" if args.logo else "split",
              "rows": {}}
    gens = sorted({s.generator for s in wild_s if s.label == 1 and s.generator})
    wild_y = np.array([s.label for s in wild_s])
    wild_g = np.array([s.generator or "" for s in wild_s])
    for row, method, opts in GROUPS[args.group]:
        if wanted is not None and row not in wanted:
            continue
        t0 = time.time()
        res: dict = {}
        if args.logo:
            for g in gens:
                keep = ~held & (wild_g != g)
                Xg = np.concatenate([ct_X, wild_X[keep]])
                yg = np.concatenate([y[:len(ct_s)], wild_y[keep]])
                head = make_head(method, seed=0, **opts)
                head.fit(Xg, yg, np.arange(len(yg)))
                test = (held & (wild_y == 0)) | (wild_g == g)
                res[g] = round(roc_auc(wild_y[test], head.predict(wild_X[test])), 4)
            res["mean_auc"] = round(float(np.mean([res[g] for g in gens])), 4)
            res["fit_seconds"] = round(time.time() - t0, 1)
            print(f"{row:55s} LOGO AUC " + " / ".join(f"{g} {res[g]:.3f}" for g in gens)
                  + f" | mean {res['mean_auc']:.4f} | {res['fit_seconds']} s", flush=True)
        else:
            head = make_head(method, seed=0, **opts)
            head.fit(X, y, np.arange(len(y)))
            res["fit_seconds"] = round(time.time() - t0, 1)
            for t, (TX, ty) in tests.items():
                p = head.predict(TX)
                res[t] = {"auc": round(roc_auc(ty, p), 4), "ap": round(average_precision(ty, p), 4)}
            print(f"{row:55s} " + " | ".join(f"{t} AUC {res[t]['auc']:.4f} AP {res[t]['ap']:.4f}" for t in tests)
                  + f" | fit {res['fit_seconds']} s", flush=True)
        report["rows"][row] = res
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
