"""Which offline backbone should the shipped default use? Measure, don't guess.

For each backbone: a linear probe trained on CIFAKE train (subset) + wild/train
(augmented views, both classes alike), then validation numbers on
  - CIFAKE val (all 2,000),
  - wild leave-one-generator-out (LOGO): refit without generator g, test held-out reals vs held-out g
    (evaluation/protocols.py leave_one_generator_out, as `fakescope leave-out --test-source` runs it),
  - CocoGlide dev at image level (real vs inpainted; never trained on),
  - FPR on real photos not used for training (COCO reals of CocoGlide) at the threshold set on
    held-out wild reals for 5% FPR.
Features go through the fakescope cache, so re-runs are cheap.

    python benchmarks/select_backbone.py --backbones effnet-lite0 rn50-nsfw vit-s14-focus
    python benchmarks/select_backbone.py --backbones effnet-lite0 --method robust-mlp --set alpha_convention=quantile
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fakescope.backbones import load_backbone
from fakescope.data.samples import FAKE, REAL, balanced_subset
from fakescope.data.sources import load_labelled
from fakescope.evaluation.metrics import summary, threshold_at_fpr
from fakescope.features import FeatureCache, extract
from fakescope.evaluation.protocols import leave_one_generator_out
from fakescope.heads import make_head
from fakescope.training import TrainConfig
from fakescope.data.splits import split_samples
from fakescope.training.options import parse_options

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def features(samples, backbone, cache, views=1):
    rows, X, errors = extract(samples, backbone, cache, views=range(views))
    idx = np.array([i for i, _ in rows])
    return idx, X, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="+", default=["effnet-lite0", "rn50-nsfw", "vit-s14-focus"])
    ap.add_argument("--cifake-per-class", type=int, default=2000)
    ap.add_argument("--cifake-val-per-class", type=int, default=None, help="a seeded subset of CIFAKE val (default: all)")
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--method", default="linear", help="head fitted on every backbone (and refitted for LOGO)")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="head option, as `fakescope train --set` (repeatable)")
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".cache" / "features"))
    ap.add_argument("--no-logo", action="store_true", help="skip leave-one-generator-out (5 refits)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    options = parse_options(args.options)

    cifake = balanced_subset(list(load_labelled(SHARED / "cifake/train.tar")), args.cifake_per_class, seed=0)
    cifake_val = balanced_subset(list(load_labelled(SHARED / "cifake/val.tar")), args.cifake_val_per_class, seed=0)
    wild = list(load_labelled(SHARED / "wild/train.tar"))
    for part, name in ((cifake, "cifake"), (wild, "wild")):
        for s in part:
            s.source = name
    glide = list(load_labelled(SHARED / "cocoglide/dev.tar"))
    held = split_samples(wild, 0.15, seed=0)  # same split as `fakescope train`
    wild_tr = [s for s, h in zip(wild, held) if not h]
    wild_va = [s for s, h in zip(wild, held) if h]
    gens = sorted({s.generator for s in wild if s.label == FAKE})
    print(f"cifake train {len(cifake)}, cifake val {len(cifake_val)}, wild train {len(wild_tr)}, "
          f"wild held-out {len(wild_va)}, cocoglide {len(glide)}; generators {gens}", file=sys.stderr)

    report = {}
    for spec in args.backbones:
        t0 = time.time()
        bb = load_backbone(spec)
        cache = FeatureCache(args.cache, bb.spec)
        train = cifake + wild_tr
        ti, TX, _ = features(train, bb, cache, args.views)
        ty = np.array([train[i].label for i in ti])
        vi, VX, _ = features(wild_va, bb, cache)
        vy = np.array([wild_va[i].label for i in vi])
        ci, CX, _ = features(cifake_val, bb, cache)
        cy = np.array([cifake_val[i].label for i in ci])
        gi, GX, _ = features(glide, bb, cache)
        gy = np.array([glide[i].label for i in gi])
        extract_s = time.time() - t0

        head = make_head(args.method, **{"seed": 0, **options})
        head.fit(TX, ty, ti)
        thr = threshold_at_fpr(head.predict(VX[vy == REAL]), 0.05)
        res = {"extract_seconds": round(extract_s, 1), "method": args.method, "options": options, "threshold": thr,
               "cifake_val": summary(cy, head.predict(CX), thr),
               "wild_heldout": summary(vy, head.predict(VX), thr),
               "cocoglide_image": summary(gy, head.predict(GX), thr),
               "coco_real_fpr": float((head.predict(GX[gy == REAL]) >= thr).mean())}
        print(f"{spec:32s} cifake-val AUC {res['cifake_val']['auc']:.4f} acc {res['cifake_val']['accuracy']:.4f} | "
              f"wild held-out AUC {res['wild_heldout']['auc']:.4f} | cocoglide AUC {res['cocoglide_image']['auc']:.4f} | "
              f"COCO-real FPR {res['coco_real_fpr']:.3f} (leave-one-generator-out next)", flush=True)
        report[spec] = res
        if args.no_logo:
            continue
        # leave one generator out of training entirely: the protocol of `fakescope leave-out`
        cfg = TrainConfig(data=["cifake", "wild"], backbone=spec, method=args.method, views=args.views,
                          cache=args.cache, uncertainty=None, head_options=options)
        logo = {g: {k: r[k] for k in ("auc", "tpr_at_5fpr", "n_fake")} for g, r in
                leave_one_generator_out(cfg, cifake + wild, "wild", log=lambda *_: None)["per_generator"].items()}
        res["logo"] = logo
        res["logo_mean_auc"] = float(np.mean([v["auc"] for v in logo.values()]))
        report[spec] = res
        print(f"{spec:32s} cifake-val AUC {res['cifake_val']['auc']:.4f} acc {res['cifake_val']['accuracy']:.4f} | "
              f"wild held-out AUC {res['wild_heldout']['auc']:.4f} | LOGO mean AUC {res['logo_mean_auc']:.4f} "
              f"{ {g: round(v['auc'], 3) for g, v in logo.items()} } | cocoglide AUC {res['cocoglide_image']['auc']:.4f} | "
              f"COCO-real FPR {res['coco_real_fpr']:.3f} | {extract_s:.0f}s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
