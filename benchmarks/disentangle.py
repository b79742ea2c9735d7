"""How much of the detection signal is semantic content, how much low-level cues?

"Parents and Children" analysis on CIFAKE: a caption per image ("a photo of a <CIFAR class>",
the same kind of text for real and fake), frozen image features, and the `disentangle` head:
a semantic projection aligned with the caption embedding (InfoNCE) and a low-level one
(supervised contrastive on real/fake); a probe on each, scored on CIFAKE val.

    python benchmarks/disentangle.py --backbone effnet-lite0 --out runs/disentangle.json
    python benchmarks/disentangle.py --ortho-weight 0.1 --ortho-weight 0   # with and without the decorrelation penalty

`--data cocoglide`: the data with parent/child pairs (each COCO photo and its GLIDE-inpainted edit,
one caption: "a photo of a <inpainted class>"; `--data OTHER.tar`: any labelled source whose images
carry a caption and a pair group, e.g. the autoencoder pairs of benchmarks/core_problem/stage_aligned.py
made from CocoGlide's originals), 5 folds by pair (a photo and its edit in the same
fold), every probe's out-of-fold scores pooled; `--pairs` adds the rows with the pairs as positives
(`pair_positives=true`).

    python benchmarks/disentangle.py --backbone clip-b16 --data cocoglide --ortho-weight 0.1 --ortho-weight 0 --pairs
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fakescope.backbones import load_backbone
from fakescope.backbones.text import load_text_encoder
from fakescope.data.samples import balanced_subset
from fakescope.data.sources import load_labelled
from fakescope.data.splits import fold_of
from fakescope.evaluation.metrics import accuracy, roc_auc
from fakescope.features import FeatureCache, extract
from fakescope.heads import make_head

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def caption(path: str) -> str:
    return f"a photo of a {CIFAR[int(path.rsplit('_c', 1)[1].split('.')[0]) - 1]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="effnet-lite0")
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".cache" / "features"))
    ap.add_argument("--ortho-weight", type=float, action="append", default=None,
                    help="decorrelation penalty weight (repeatable: one table each; default 0.1)")
    ap.add_argument("--data", default="cifake",
                    help="cifake, cocoglide, or a labelled source whose images carry a caption and a pair group")
    ap.add_argument("--pairs", action="store_true", help="also train with parent/child pairs as positives")
    ap.add_argument("--folds", type=int, default=5, help="cocoglide: folds by pair")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.data != "cifake":
        return paired(args)

    train = balanced_subset(list(load_labelled(SHARED / "cifake/train.tar")), args.per_class, seed=0)
    val = list(load_labelled(SHARED / "cifake/val.tar"))
    bb = load_backbone(args.backbone)
    cache = FeatureCache(args.cache, bb.spec)
    _, X, _ = extract(train, bb, cache)
    _, V, _ = extract(val, bb, cache)
    y = np.array([s.label for s in train])
    yv = np.array([s.label for s in val])
    T = load_text_encoder("minilm").encode([caption(s.path) for s in train])
    res = {"backbone": args.backbone, "by_ortho_weight": {}}
    for w in args.ortho_weight or [0.1]:
        head = make_head("disentangle", seed=0, ortho_weight=w)
        info = head.fit(X, y, np.arange(len(y)), text=T)
        r = {"cifake_val": head.analysis(V, yv), "heldout": info.get("heldout_analysis"),
             "last_epoch_losses": info.get("last_epoch_losses")}
        res["by_ortho_weight"][str(w)] = r
        for name, m in r["cifake_val"].items():
            print(f"ortho_weight {w:g} {name:10s} probe on CIFAKE val: AUC {m['auc']:.4f} acc {m['accuracy']:.4f}",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))


def paired(args) -> None:
    source = SHARED / "cocoglide/dev.tar" if args.data == "cocoglide" else Path(args.data)
    samples = list(load_labelled(source))
    if any(s.text is None for s in samples):
        raise SystemExit(f"{source}: every image needs a caption (the pair's class)")
    bb = load_backbone(args.backbone)
    rows, X, _ = extract(samples, bb, FeatureCache(args.cache, bb.spec))
    kept = [samples[i] for i, _ in rows]
    y = np.array([s.label for s in kept])
    groups = np.array([s.group_key() for s in kept])
    T = load_text_encoder("minilm").encode([f"a photo of a {s.text}" for s in kept])
    fold = np.array([fold_of(g, args.folds, seed=0) for g in groups])
    res = {"backbone": args.backbone, "data": str(source), "n": len(y), "pairs": int(len(set(groups))), "folds": args.folds, "rows": {}}
    for w in args.ortho_weight or [0.1]:
        for pairs in ([False, True] if args.pairs else [False]):
            oof = {name: np.zeros(len(y)) for name in ("sem", "low", "both")}
            for k in range(args.folds):
                tr, te = fold != k, fold == k
                head = make_head("disentangle", seed=0, ortho_weight=w, pair_positives=pairs)
                head.fit(X[tr], y[tr], groups[tr], text=T[tr])
                emb = head._embeddings(X[te])
                for name in oof:
                    oof[name][te] = head.probes[name].predict(emb[name])
            name = f"ortho_weight {w:g}, pairs as positives {'yes' if pairs else 'no'}"
            res["rows"][name] = r = {probe: {"auc": roc_auc(y, s), "accuracy": accuracy(y, s, 0.5)}
                                     for probe, s in zip(("semantic", "low_level", "both"), oof.values())}
            print(name, " | ".join(f"{p} AUC {m['auc']:.4f} acc {m['accuracy']:.4f}" for p, m in r.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
