"""How should a large photo be read? Issue 15: one centre crop after resizing (CLIP's own
preprocessing), a squash of the whole image, or a centre crop at native resolution.

The default's recipe (linear probe on clip-b16, every source, camera photos folded by device as
in `fakescope validate`) is fitted once per fold on the usual `resize_crop` features; the images
it is tested on are then read with each policy, through the same head and threshold:

  people   the photoreal-people source held out (its fakes are ~1024 px, its COCO reals 512 px)
  photos   camera photos of held-out devices (1-24 MP): the share called fake

    python benchmarks/core_problem/read_policy.py --shared ../shared/data --extra ../data-extra
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from fakescope.backbones import load_backbone
from fakescope.data.samples import REAL
from fakescope.evaluation.metrics import roc_auc
from fakescope.evaluation.protocols import device_fold, device_of, load_named
from fakescope.features import FeatureCache, extract
from fakescope.training import TrainConfig, fit_detector

POLICIES = ("clip-b16", "clip-b16?resize=resize", "clip-b16?resize=native_crop")


def scores(det, samples, spec: str, cache: str) -> tuple[np.ndarray, np.ndarray]:
    bb = load_backbone(spec)
    rows, X, _ = extract(samples, bb, FeatureCache(cache, bb.spec), desc=spec)
    return np.array([samples[i].label for i, _ in rows]), det.head_scores(X)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--extra", default="../data-extra")
    ap.add_argument("--cache", default=".cache/features")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cfg = TrainConfig(data=[], backbone="clip-b16", per_class=1000, cache=a.cache, uncertainty=None)
    sources = load_named([f"cifake={a.shared}/cifake/train.tar", f"wild={a.shared}/wild/train.tar",
                          f"sd512={a.extra}/sd512-imagenet/train.tar", f"people={a.extra}/people-coco/train.tar"], 1000)
    cams = load_named([f"digicam={a.extra}/photos-digicam/train.tar", f"mei={a.extra}/photos-mei/train.tar"], None)
    quiet = lambda *_: None  # noqa: E731
    out: dict = {"people_auc": {}, "photos_fpr": {}}

    people = next(s for s in sources if s.name == "people")
    train = [s for src in sources if src is not people for s in src.samples] + [s for c in cams for s in c.samples]
    names = sorted({s.source for s in train})
    det = fit_detector(replace(cfg, data=names, calibrate_on=names), train, log=quiet)
    for spec in POLICIES:
        y, s = scores(det, people.samples, spec, a.cache)
        out["people_auc"][spec] = {"auc": roc_auc(y, s), "acc_real": float((s[y == 0] < det.threshold).mean()),
                                   "acc_fake": float((s[y == 1] >= det.threshold).mean())}
        print(f"people held out, read by {spec}: {out['people_auc'][spec]}", flush=True)

    pool = [s for c in cams for s in c.samples if s.label == REAL]
    fold = [device_fold(device_of(s), a.folds, 0) for s in pool]
    called = {spec: 0 for spec in POLICIES}
    for k in range(a.folds):
        test = [s for s, f in zip(pool, fold) if f == k]
        train = [s for s, f in zip(pool, fold) if f != k] + [s for src in sources for s in src.samples]
        names = sorted({s.source for s in train})
        det = fit_detector(replace(cfg, data=names, calibrate_on=names), train, log=quiet)
        for spec in POLICIES:
            _, s = scores(det, test, spec, a.cache)
            called[spec] += int((s >= det.threshold).sum())
    for spec in POLICIES:
        out["photos_fpr"][spec] = called[spec] / len(pool)
        print(f"camera photos, device-held-out, read by {spec}: {called[spec]} of {len(pool)} called fake", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
