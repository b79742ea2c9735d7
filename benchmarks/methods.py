"""The frozen-feature methods side by side on the shared data (validation numbers).

Same backbone, same training images (CIFAKE train subset + the wild/train split that
`fakescope train` and benchmarks/select_backbone.py use), same held-out sets:
  - CIFAKE val, CocoGlide dev at image level (never trained on), wild held-out,
  - wild leave-one-generator-out (LOGO): refit without generator g, test held-out reals vs held-out g
    (evaluation/protocols.py leave_one_generator_out, as `fakescope leave-out --test-source` runs it).
Methods: linear, multilayer (class tokens of several blocks), robust-mlp with and without
SAM, and with captions (minilm) as a second modality. Captions: CIFAKE images get
"a photo of a <CIFAR class>" for both classes (same kind of text, no leak); wild/ texts
are class names for reals and prompts for fakes (they leak), so caption runs train on
CIFAKE only and are tested on CIFAKE val and CocoGlide (whose texts are the inpainted
COCO class, for the real and the fake alike).
An imbalanced run (1 fake per 10 reals in training) compares linear and robust-mlp.

    python benchmarks/methods.py --backbone effnet-lite0 --out runs/methods.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from fakescope.backbones import load_backbone
from fakescope.backbones.text import load_text_encoder
from fakescope.data.samples import FAKE, REAL, balanced_subset
from fakescope.data.sources import load_labelled
from fakescope.training.leakage import text_leak_check
from fakescope.evaluation.metrics import summary, threshold_at_fpr
from fakescope.features import FeatureCache, extract
from fakescope.evaluation.protocols import leave_one_generator_out
from fakescope.heads import make_head
from fakescope.training import TrainConfig
from fakescope.data.splits import split_samples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_caption(path: str) -> str:
    m = re.search(r"_c(\d+)\.\w+$", path)
    return f"a photo of a {CIFAR[int(m.group(1)) - 1]}" if m else ""


def feats(samples, bb, cache):
    rows, X, errors = extract(samples, bb, cache)
    assert not errors, errors[:3]
    return X


def fit_eval(method, opts, Xtr, ytr, gtr, tests, calib):
    """Fit, set the threshold for 5% FPR on `calib` (held-out reals), score every test set."""
    head = make_head(method, seed=0, **opts)
    t0 = time.time()
    head.fit(Xtr, ytr, gtr)
    thr = threshold_at_fpr(head.predict(calib), 0.05)
    out = {name: summary(y, head.predict(X), thr) for name, (X, y) in tests.items()}
    out["fit_seconds"] = round(time.time() - t0, 1)
    return out, head


def brief(m):
    return {k: round(m[k], 4) for k in ("ap", "auc", "accuracy", "acc_real", "acc_fake") if k in m}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="effnet-lite0")
    ap.add_argument("--layers", default="6,11,16", help="blocks for the multilayer probe")
    ap.add_argument("--cifake-per-class", type=int, default=2000)
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".cache" / "features"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    cifake = balanced_subset(list(load_labelled(SHARED / "cifake/train.tar")), args.cifake_per_class, seed=0)
    cval = list(load_labelled(SHARED / "cifake/val.tar"))
    for s in cifake + cval:
        s.text = cifar_caption(s.path)
    wild = list(load_labelled(SHARED / "wild/train.tar"))
    for part, name in ((cifake, "cifake"), (wild, "wild")):
        for s in part:
            s.source = name
    glide = list(load_labelled(SHARED / "cocoglide/dev.tar"))
    held = split_samples(wild, 0.15, seed=0)
    wtr = [s for s, h in zip(wild, held) if not h]
    wva = [s for s, h in zip(wild, held) if h]
    train = cifake + wtr
    y = np.array([s.label for s in train])
    groups = np.arange(len(train))
    yv, yc, yg = (np.array([s.label for s in d]) for d in (wva, cval, glide))

    report: dict = {"backbone": args.backbone, "n_train": len(train)}
    spaces = {"image": args.backbone, "multilayer": f"{args.backbone}?layers={args.layers}"}
    F = {}
    for key, spec in spaces.items():
        bb = load_backbone(spec)
        cache = FeatureCache(args.cache, bb.spec)
        F[key] = {n: feats(d, bb, cache) for n, d in (("train", train), ("wild", wva), ("cifake", cval), ("glide", glide))}
        print(f"features {spec} ready", file=sys.stderr, flush=True)

    def tests(key):
        f = F[key]
        return {"cifake_val": (f["cifake"], yc), "cocoglide_image": (f["glide"], yg), "wild_heldout": (f["wild"], yv)}

    runs = [("linear", "image", "linear", {}),
            ("multilayer", "multilayer", "multilayer", {}),
            ("robust-mlp (SAM)", "image", "robust-mlp", {}),
            ("robust-mlp (no SAM)", "image", "robust-mlp", {"sam": False})]
    table = {}
    for name, key, method, opts in runs:
        if method == "multilayer":
            bb = load_backbone(spaces[key])
            from fakescope.training.common import head_options
            opts = head_options(TrainConfig(data=[], method="multilayer"), bb)
        Xtr = F[key]["train"]
        res, head = fit_eval(method, opts, Xtr, y, groups, tests(key), F[key]["wild"][yv == REAL])
        # the protocol of `fakescope leave-out --test-source wild` (fit_detector sets multilayer's options itself)
        cfg = TrainConfig(data=["cifake", "wild"], backbone=spaces[key], method=method, cache=args.cache,
                          head_options={} if method == "multilayer" else opts, uncertainty=None)
        logo = {g: brief(r) for g, r in
                leave_one_generator_out(cfg, cifake + wild, "wild", log=lambda *_: None)["per_generator"].items()}
        res["logo"] = logo
        res["logo_mean_auc"] = float(np.mean([v["auc"] for v in logo.values()]))
        res["logo_mean_ap"] = float(np.mean([v["ap"] for v in logo.values()]))
        table[name] = res
        print(f"{name:24s} " + " | ".join(f"{t} AUC {res[t]['auc']:.4f} AP {res[t]['ap']:.4f} acc {res[t]['accuracy']:.4f}"
                                          for t in ("cifake_val", "cocoglide_image", "wild_heldout"))
              + f" | LOGO AUC {res['logo_mean_auc']:.4f} AP {res['logo_mean_ap']:.4f}", flush=True)
    report["methods"] = table

    # captions as a second modality: CIFAKE-only training (its captions are alike for both classes)
    enc = load_text_encoder("minilm")
    ci = np.arange(len(cifake))
    T = {"train": enc.encode([s.text for s in cifake]), "cifake": enc.encode([s.text for s in cval]),
         "glide": enc.encode([s.text or "" for s in glide])}
    leak = text_leak_check(T["train"], y[ci], ci)
    wild_leak = text_leak_check(enc.encode([s.text or "" for s in wtr]), np.array([s.label for s in wtr]))
    report["text_leak_check"] = {"cifake_captions": leak, "wild_texts": wild_leak}
    print(f"text-only AUC: CIFAKE captions {leak['text_only_auc']:.3f}; wild texts {wild_leak['text_only_auc']:.3f} "
          f"(leaks={wild_leak['leaks']})", flush=True)
    cap = {}
    Fi = F["image"]
    for name, method, opts, modality in [("linear, image", "linear", {}, "image"),
                                         ("linear, image+text", "linear", {}, "both"),
                                         ("robust-mlp, image", "robust-mlp", {}, "image"),
                                         ("robust-mlp, image+text", "robust-mlp", {}, "both"),
                                         ("linear, text only", "linear", {}, "text")]:
        def view(X, t):
            return {"image": X, "text": t, "both": np.concatenate([X, t], 1)}[modality]
        Xtr = view(Fi["train"][ci], T["train"])
        tst = {"cifake_val": (view(Fi["cifake"], T["cifake"]), yc), "cocoglide_image": (view(Fi["glide"], T["glide"]), yg)}
        res, _ = fit_eval(method, opts, Xtr, y[ci], ci, tst, tst["cifake_val"][0][yc == REAL])
        cap[name] = res
        print(f"CIFAKE-only {name:24s} " + " | ".join(f"{t} AUC {res[t]['auc']:.4f} AP {res[t]['ap']:.4f} acc {res[t]['accuracy']:.4f}"
                                                    for t in tst), flush=True)
    report["captions"] = cap

    # imbalance: 1 fake per 10 reals in training
    rng = np.random.default_rng(0)
    fake_idx = np.flatnonzero(y == FAKE)
    keep = np.concatenate([np.flatnonzero(y == REAL), rng.choice(fake_idx, (y == REAL).sum() // 10, replace=False)])
    imb = {}
    for name, method, opts in [("linear", "linear", {}), ("robust-mlp (SAM)", "robust-mlp", {}),
                               ("robust-mlp (no SAM)", "robust-mlp", {"sam": False}),
                               ("robust-mlp, BCE only (gamma=1, alpha=1)", "robust-mlp", {"gamma": 1.0, "alpha": 1.0})]:
        res, _ = fit_eval(method, opts, Fi["train"][keep], y[keep], groups[keep], tests("image"), Fi["wild"][yv == REAL])
        imb[name] = res
        print(f"imbalanced 1:10 {name:40s} " + " | ".join(f"{t} AUC {res[t]['auc']:.4f} AP {res[t]['ap']:.4f} acc {res[t]['accuracy']:.4f}"
                                                         for t in ("cifake_val", "cocoglide_image", "wild_heldout")), flush=True)
    report["imbalanced_1_to_10"] = {"n_real": int((y[keep] == REAL).sum()), "n_fake": int((y[keep] == FAKE).sum()), **imb}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
