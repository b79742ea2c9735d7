"""Issue 20 / issue 19 item 6: the localiser's settings chosen by k-fold cross-validation over pairs.

Step 1, `extract`: clip-b16 patch grids of every block asked for, in ONE forward per view, stored as
float16 .npy per block under --cache/<view>/ (with the 224 px targets and an index). A view is
`whole` (the image squashed to 224, the shipped localiser's read) or `tiles:STRIDE` (224 px windows
at native resolution, `fakescope.localize.tiles`). Block K is the output of transformer block K
counted from 1 (`?patch_layer=K`; DeCLIP's `layerK-1`).

Step 2, `cv`: for each setting (blocks, decoder, epochs, view) train one decoder per fold on the other
folds' pairs (CocoGlide dev by pair, `--folds`, hashed by pair) and write the out-of-fold maps'
per-image numbers to --out (JSON): best-F1, F1/IoU at cross-fitted thresholds, pixel AUC, image AUC.
Nothing here is fitted on the fold it is scored on.

    nice -n 10 python benchmarks/localization_cv.py extract --view whole --blocks 1-12
    nice -n 10 python benchmarks/localization_cv.py cv --view whole --blocks 8 --out runs/i20/b8.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import loc_cv_lib  # noqa: E402


def blocks_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--data", default=str(ROOT.parent / "shared/data/cocoglide/dev.tar"))
    e.add_argument("--view", default="whole")
    e.add_argument("--blocks", type=blocks_arg, default=blocks_arg("1-12"))
    e.add_argument("--cache", type=Path, default=ROOT / ".cache/loc-cv")
    e.add_argument("--name", default="cocoglide")
    e.add_argument("--backbone", default="clip-b16", help="another token backbone (vit-s14-focus) adds its "
                   "block files beside a view already cached")
    c = sub.add_parser("cv")
    c.add_argument("--view", default="whole")
    c.add_argument("--blocks", type=blocks_arg, required=True)
    c.add_argument("--decoder", default="fakescope")
    c.add_argument("--width", type=int, default=96)
    c.add_argument("--epochs", type=int, default=12)
    c.add_argument("--stages", type=int, default=None, help="0: a linear probe (BatchNorm + 1x1 conv per patch)")
    c.add_argument("--target-size", type=int, default=56, help="train on targets shrunk to this side")
    c.add_argument("--solver", default="adamw", help="ridge: the closed-form linear decoder (with --stages 0)")
    c.add_argument("--ridge-lambda", type=float, default=100.0)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--folds", type=int, default=5)
    c.add_argument("--max-folds", type=int, default=0, help="run only the first N folds (cost)")
    c.add_argument("--extra", default="", help="another cached set whose pairs join every training fold")
    c.add_argument("--extra-view", default="", help="the extra set's view (default: --view)")
    c.add_argument("--second", default="", help="BACKBONE:K: that backbone's block-K grid (extracted with "
                   "extract --backbone), resized to 14 x 14 and concatenated on channels")
    c.add_argument("--cache", type=Path, default=ROOT / ".cache/loc-cv")
    c.add_argument("--name", default="cocoglide")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--save-maps", type=Path, default=None, help="write the out-of-fold maps (.npy, float16)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--ship-to", type=Path, default=None, help="also refit on every pair and save the localiser here")
    c.add_argument("--ship-stride", type=int, default=0, help="ship: the saved tile stride (the same windows on "
                   "256 px images for any stride >= 32; it matters for larger images)")
    c.add_argument("--max-real-pixels", type=float, default=0.05, help="ship: mask threshold flags <= this share of real pixels")
    c.add_argument("--max-real-images", type=float, default=0.05, help="ship: image rule flags <= this share of pristine images")
    r = sub.add_parser("ridge", help="a closed-form linear probe per patch (cheap block sweep)")
    r.add_argument("--view", default="whole")
    r.add_argument("--blocks", type=blocks_arg, required=True)
    r.add_argument("--lams", default="0.1,1,10,100")
    r.add_argument("--second", default="", help="as for cv")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--cache", type=Path, default=ROOT / ".cache/loc-cv")
    r.add_argument("--name", default="cocoglide")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verdict", help="detector + map on edited vs pristine (cross-fitted image threshold)")
    v.add_argument("--maps", type=Path, required=True, help="out-of-fold maps written by cv --save-maps")
    v.add_argument("--detections", type=Path, required=True, help="fakescope scan JSONL of the same images")
    v.add_argument("--fraction", type=float, default=0.02)
    v.add_argument("--max-fpr", type=float, default=0.05)
    v.add_argument("--folds", type=int, default=5)
    v.add_argument("--out", type=Path, required=True)
    t_ = sub.add_parser("cost", help="seconds per image / per megapixel of a localiser: whole read vs tiles")
    t_.add_argument("--model", default=None, help="localiser folder (default: the shipped one)")
    t_.add_argument("--sizes", default="256x256,1024x768,4000x3000")
    t_.add_argument("--strides", default="112,224")
    t_.add_argument("--repeat", type=int, default=2)
    t_.add_argument("--out", type=Path, required=True)
    u = sub.add_parser("rule", help="the image threshold set on more kinds of real photos")
    u.add_argument("--maps", type=Path, required=True)
    u.add_argument("--detections", type=Path, required=True)
    u.add_argument("--fraction", type=float, default=0.005)
    u.add_argument("--calib", type=Path, action="append", default=[], help="scan --localize JSONL of real photos")
    u.add_argument("--held-out", type=Path, action="append", default=[], help="scan --localize JSONL of other real photos")
    u.add_argument("--max-fpr", type=float, default=0.05)
    u.add_argument("--out", type=Path, required=True)
    p_ = sub.add_parser("apply", help="a saved localiser on a cached make-edits view, per kind of edit")
    p_.add_argument("--model", default=None, help="localiser folder (default: the shipped one)")
    p_.add_argument("--name", required=True)
    p_.add_argument("--view", default="tiles:224")
    p_.add_argument("--by", default="mechanism", help="table.csv column to group the edited images by")
    p_.add_argument("--cache", type=Path, default=ROOT / ".cache/loc-cv")
    p_.add_argument("--out", type=Path, required=True)
    d_ = sub.add_parser("decoder-cost", help="seconds per window of a training step: our decoder vs conv-20")
    d_.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t = time.perf_counter()
    if a.cmd == "apply":
        res = loc_cv_lib.apply_report(a.model, a.cache, a.name, a.view, a.by)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    elif a.cmd == "decoder-cost":
        res = loc_cv_lib.decoder_cost()
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    elif a.cmd == "rule":
        res = loc_cv_lib.rule_report(a.maps, a.detections, a.fraction, a.calib, a.held_out, a.max_fpr)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res))
    elif a.cmd == "cost":
        res = loc_cv_lib.cost(a.model, a.sizes, a.strides, a.repeat)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res))
    elif a.cmd == "verdict":
        res = loc_cv_lib.verdict_report(a.maps, a.detections, a.fraction, a.max_fpr, a.folds)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res))
    elif a.cmd == "extract":
        loc_cv_lib.extract(a.data, a.view, a.blocks, a.cache / a.name, a.backbone)
    else:
        a.command = "python benchmarks/localization_cv.py " + " ".join(sys.argv[1:])
        if a.cmd == "cv" and a.ship_to:
            shipped = loc_cv_lib.ship(a)
            print(json.dumps({k: v for k, v in shipped.items() if k != "cv"}, default=float))
            res = {"summary": shipped["cv"], "ship": {k: v for k, v in shipped.items() if k != "cv"}}
        else:
            res = loc_cv_lib.run_cv(a) if a.cmd == "cv" else loc_cv_lib.run_ridge(a)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        s = res["summary"]
        print(json.dumps({k: s[k] for k in s if not isinstance(s[k], (list, dict))}))
    print(f"{time.perf_counter() - t:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
