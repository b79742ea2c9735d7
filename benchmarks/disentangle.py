"""How much of the detection signal is semantic content, how much low-level cues?

"Parents and Children" analysis on CIFAKE: a caption per image ("a photo of a <CIFAR class>",
the same kind of text for real and fake), frozen image features, and the `disentangle` head:
a semantic projection aligned with the caption embedding (InfoNCE) and a low-level one
(supervised contrastive on real/fake); a probe on each, scored on CIFAKE val.

    python benchmarks/disentangle.py --backbone effnet-lite0 --out runs/disentangle.json
    python benchmarks/disentangle.py --ortho-weight 0.1 --ortho-weight 0   # with and without the decorrelation penalty
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
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
