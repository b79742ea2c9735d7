"""The pieces of benchmarks/localization_cv.py: cached multi-block grids, pair folds, out-of-fold maps."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

TILE = 224


def _session(blocks: list[int], backbone: str = "clip-b16"):
    """A token backbone (squash preprocessing) with every asked block's tokens as graph outputs."""
    from fakescope.backbones import load_backbone, parse_spec
    spec = parse_spec(f"{backbone}?resize=resize&layers=" + ",".join(map(str, blocks)))
    bb = load_backbone(spec)
    return bb, spec, [bb._layer_name(k) for k in blocks]


def block_file(k: int, backbone: str = "clip-b16") -> str:
    """The cached grid file of block k: clip-b16's keep their first names, other backbones are prefixed."""
    return f"block{k}.npy" if backbone == "clip-b16" else f"{backbone}-block{k}.npy"


def _views(img, mask, view: str):
    """[(224 px PIL window, (224, 224) float target, meta)] of one image under `view`."""
    from fakescope.localize import tiles
    from fakescope.localize.localizer import mask_array, preprocess_mask
    from fakescope.backbones import parse_spec
    m = np.zeros((img.height, img.width), np.float32) if mask is None else mask_array(mask)
    if view == "whole":
        spec = parse_spec("clip-b16?resize=resize")
        return [(img, preprocess_mask(m, spec), {"box": None, "tiled": list(img.size)})]
    stride = int(view.split(":")[1])
    wins, where, size = tiles.cut(img, TILE, stride)
    ms = tiles.cut_mask(m, TILE, stride)
    return [(w, t, {"box": list(b), "tiled": list(size)}) for w, t, b in zip(wins, ms, where)]


def extract(data: str, view: str, blocks: list[int], out: Path, backbone: str = "clip-b16") -> None:
    """Grids of `blocks` of `backbone` over every window of `view`; a second backbone over a view
    already cached adds its block files beside the first (same windows, same index)."""
    from concurrent.futures import ThreadPoolExecutor

    from fakescope.backbones import preprocess
    from fakescope.data.pairs import load_pairs
    from fakescope.localize.localizer import load_image

    pairs = load_pairs(data)
    bb, spec, names = _session(blocks, backbone)
    d = out / view.replace(":", "-")
    d.mkdir(parents=True, exist_ok=True)
    index, targets = [], []
    grids = {k: [] for k in blocks}
    t0 = time.perf_counter()
    n_windows = 0
    pixels = 0
    pool = ThreadPoolExecutor(len(bb.sessions))
    for i, p in enumerate(pairs):
        img = load_image(p.image)
        pixels += img.width * img.height
        views = _views(img, p.mask, view)
        arrays = [preprocess(w, spec)[None] for w, _, _ in views]
        runs = list(pool.map(lambda j: bb.sessions[j % len(bb.sessions)].run(names, {bb.input_name: arrays[j]}),
                             range(len(arrays))))
        for j, (w, target, meta) in enumerate(views):
            for k, o in zip(blocks, runs[j]):
                side = int(round((o.shape[1] - 1) ** 0.5))  # CLS first, then the patch tokens
                g = o[0, 1:].reshape(side, side, -1).transpose(2, 0, 1)
                grids[k].append(g.astype(np.float16))
            targets.append(np.round(target * 255).astype(np.uint8))
            index.append({"image": i, "name": p.name, "group": p.group, "label": p.label,
                          "size": list(img.size), **meta})
        n_windows += len(views)
        if i % 50 == 0:
            print(f"{i}/{len(pairs)} images, {n_windows} windows, {time.perf_counter() - t0:.0f}s", flush=True)
    secs = time.perf_counter() - t0
    for k in blocks:
        np.save(d / block_file(k, backbone), np.stack(grids[k]))
    if (d / "index.json").exists() and backbone != "clip-b16":  # beside clip-b16's grids: the same windows
        meta = json.loads((d / "index.json").read_text())
        if [(r["name"], r["box"]) for r in meta["rows"]] != [(r["name"], r["box"]) for r in index]:
            raise ValueError(f"{d}: the cached windows differ from these")
        meta.setdefault("extra_backbones", {})[backbone] = {"blocks": blocks, "seconds": round(secs, 1)}
        (d / "index.json").write_text(json.dumps(meta))
    else:
        np.save(d / "targets.npy", np.stack(targets))
        (d / "index.json").write_text(json.dumps({"view": view, "blocks": blocks, "seconds": round(secs, 1),
                                                  "megapixels": round(pixels / 1e6, 3), "windows": n_windows,
                                                  "data": str(data), "rows": index}))  # as given: pair names are built from it
    print(f"{n_windows} windows of {len(pairs)} images in {secs:.1f}s "
          f"({secs / (pixels / 1e6):.2f} s per megapixel incl. decode, all blocks in one forward)")


# ------------------------------------------------------------------ cross-validation
def load_view(cache: Path, name: str, view: str, blocks: list[int], second: str = ""):
    """(grids (n, C * len(blocks), 14, 14) float16, targets (n, 224, 224) uint8, index) of a cached view.
    `second` = "BACKBONE:K" adds that backbone's block-K grid, resized (bilinear) to 14 x 14 and
    concatenated on channels, as the decoder treats a second backbone."""
    d = cache / name / view.replace(":", "-")
    meta = json.loads((d / "index.json").read_text())
    parts = [np.load(d / f"block{k}.npy", mmap_mode="r") for k in blocks]
    if second:
        import torch
        kind, k = second.rsplit(":", 1)
        g2 = np.load(d / block_file(int(k), kind), mmap_mode="r")
        side = parts[0].shape[2]
        parts.append(np.concatenate([torch.nn.functional.interpolate(
            torch.from_numpy(np.asarray(g2[i:i + 256], np.float32)), size=(side, side), mode="bilinear",
            align_corners=False).numpy().astype(np.float16) for i in range(0, len(g2), 256)]))
    grids = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return np.ascontiguousarray(grids), np.load(d / "targets.npy"), meta


def pair_folds(groups: list[str], k: int, seed: int = 0) -> dict[str, int]:
    """Pair id -> fold: the pairs ordered by a seeded hash, dealt round-robin (folds differ by <= 1 pair)."""
    import hashlib
    uniq = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    return {g: i % k for i, g in enumerate(uniq)}


def window_maps(loc, grids: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Probabilities (n, 224, 224) of the decoder on the windows idx."""
    import torch
    logits = loc._all_logits([grids[idx]], 32)
    return torch.sigmoid(logits).numpy()


def image_maps(probs: np.ndarray, rows: list[dict], view: str) -> dict[int, np.ndarray]:
    """Window probabilities -> one map per image at its original size (stitched for tiles)."""
    from fakescope.backbones import parse_spec
    from fakescope.localize import tiles
    from fakescope.localize.localizer import restore_map
    by_image: dict[int, list[int]] = {}
    for j, r in enumerate(rows):
        by_image.setdefault(r["image"], []).append(j)
    out = {}
    spec = parse_spec("clip-b16?resize=resize")
    for i, js in by_image.items():
        r0 = rows[js[0]]
        if view == "whole":
            out[i] = restore_map(probs[js[0]], tuple(r0["size"]), spec)
        else:
            out[i] = tiles.stitch(probs[js], [tuple(rows[j]["box"]) for j in js], tuple(r0["tiled"]), tuple(r0["size"]))
    return out


def run_cv(a) -> dict:
    import torch

    from fakescope.localize.localizer import Localizer, LocalizerConfig, _Prepared

    torch.set_num_threads(1)
    grids, targets, meta = load_view(a.cache, a.name, a.view, a.blocks, a.second)
    rows = meta["rows"]
    folds = pair_folds([r["group"] for r in rows], a.folds, a.seed)
    win_fold = np.array([folds[r["group"]] for r in rows])
    extra = None
    if a.extra:
        eg, et, _ = load_view(a.cache, a.extra, a.extra_view or a.view, a.blocks, a.second)
        extra = (eg, et)
    probs = np.zeros(targets.shape, np.float16)
    fold_info = []
    n_run = a.max_folds or a.folds
    for f in range(n_run):
        tr, te = np.flatnonzero(win_fold != f), np.flatnonzero(win_fold == f)
        g, t = grids[tr], targets[tr]
        if extra is not None:
            g, t = np.concatenate([g, extra[0]]), np.concatenate([t, extra[1]])
        cfg = LocalizerConfig(backbone="clip-b16?resize=resize", width=a.width, decoder=a.decoder, stages=a.stages,
                              target_size=a.target_size, epochs=a.epochs, lr=a.lr, seed=a.seed,
                              solver=a.solver, ridge_lambda=a.ridge_lambda)
        loc = Localizer(cfg)
        info = loc.fit_grids(_Prepared([g], [], t), None, log=None)
        probs[te] = window_maps(loc, grids, te)
        fold_info.append({"fold": f, "n_train_windows": len(tr), "n_test_windows": len(te),
                          "train_seconds": info["train_seconds"],
                          "last_loss": info["epochs"][-1]["loss"] if "epochs" in info else None})
        print(f"fold {f}: {info['train_seconds']:.0f}s", flush=True)
        del g, t
    keep = [j for j in range(len(rows)) if win_fold[j] < n_run]
    maps = image_maps(probs.astype(np.float32), rows, a.view)
    maps = {i: m for i, m in maps.items() if folds[rows[[j for j in keep if rows[j]['image'] == i][0]]['group']] < n_run} \
        if n_run < a.folds else maps
    a._maps, a._rows, a._folds = maps, rows, folds  # for `ship`
    res = score_oof(maps, rows, folds, meta.get("data"))
    a._data = meta.get("data")
    res["setting"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if not k.startswith("_")}
    res["folds"] = fold_info
    if a.save_maps:
        a.save_maps.parent.mkdir(parents=True, exist_ok=True)
        ids = sorted(maps)
        np.save(a.save_maps, np.stack([maps[i] for i in ids]).astype(np.float16))
        (a.save_maps.with_suffix(".json")).write_text(json.dumps(
            [{"image": i, **{k: rows[[j for j in range(len(rows)) if rows[j]["image"] == i][0]][k]
                            for k in ("name", "group", "label")}} for i in ids]))
    return res


GRID = np.round(np.arange(0.0, 1.0001, 0.005), 3)
TOPK = (0.005, 0.02, 0.05, 0.1, 0.25)


def image_stats(m: np.ndarray) -> dict[str, float]:
    """Candidate image-level 'was this edited' scores from a map."""
    from fakescope.evaluation.localization import map_scores, top_mean
    s = map_scores(m)
    return {"mean": s["mean"], "max3": s["max"], **{f"top{q:g}": top_mean(m, q) for q in TOPK}}


def _curves(m: np.ndarray, mask: np.ndarray | None):
    """F1 and IoU at every GRID threshold (fake), or pixels flagged (real)."""
    k = np.searchsorted(GRID, m.ravel(), side="right") - 1  # pixel >= GRID[j] iff k >= j
    if mask is None:
        h = np.bincount(k, minlength=len(GRID))
        return np.cumsum(h[::-1])[::-1] / m.size
    pos = mask.ravel().astype(bool)
    hp = np.cumsum(np.bincount(k[pos], minlength=len(GRID))[::-1])[::-1]
    hn = np.cumsum(np.bincount(k[~pos], minlength=len(GRID))[::-1])[::-1]
    n_pos = pos.sum()
    return 2 * hp / (hp + hn + n_pos), hp / (hn + n_pos)


def _masks(names: set[str], data: str | None = None) -> dict[str, np.ndarray]:
    """The full-size masks of these images of `data` (the set a view was extracted from; default CocoGlide dev)."""
    from fakescope.data.pairs import load_pairs
    root = data or Path(__file__).resolve().parents[2] / "shared/data/cocoglide/dev.tar"
    return {p.name: p.mask for p in load_pairs(root) if p.name in names}


def score_oof(maps: dict[int, np.ndarray], rows: list[dict], folds: dict[str, int], data: str | None = None) -> dict:
    """Per-image numbers of out-of-fold maps, thresholds and image score cross-fitted over folds."""
    from fakescope.evaluation.localization import PixelMetrics, best_f1
    from fakescope.evaluation.metrics import roc_auc
    first = {}
    for r in rows:
        first.setdefault(r["image"], r)
    masks = _masks({first[i]["name"] for i in maps}, data)
    fake, real = {}, {}
    stats, labels, fold_of = [], [], []
    pm = PixelMetrics()
    for i, m in maps.items():
        r = first[i]
        f = folds[r["group"]]
        st = image_stats(m)
        stats.append(st)
        labels.append(r["label"])
        fold_of.append(f)
        if r["label"] == 1:
            mk = masks[r["name"]]
            f1c, iouc = _curves(m, mk)
            fake[i] = (f, f1c, iouc, best_f1(m, mk))
            pm.update(m, mk, True)
        else:
            real[i] = (f, _curves(m, None))
            pm.update(m, None, False)
    fold_ids = sorted(set(fold_of))
    j05 = int(np.argmin(np.abs(GRID - 0.5)))
    per_fold_t = {}
    f1_cf, iou_cf, f1_fpr, iou_fpr = [], [], [], []
    for f in fold_ids:
        oth_f1 = np.mean([v[1] for v in fake.values() if v[0] != f], axis=0)
        oth_fpr = np.mean([v[1] for v in real.values() if v[0] != f], axis=0) if real else np.zeros(len(GRID))
        jb = int(np.argmax(oth_f1))
        ok = np.where(oth_fpr <= 0.05, oth_f1, -1.0)
        jf = int(np.argmax(ok))
        per_fold_t[f] = {"best_f1_rule": float(GRID[jb]), "fpr5_rule": float(GRID[jf])}
        mine = [v for v in fake.values() if v[0] == f]
        f1_cf += [v[1][jb] for v in mine]
        iou_cf += [v[2][jb] for v in mine]
        f1_fpr += [v[1][jf] for v in mine]
        iou_fpr += [v[2][jf] for v in mine]
    y = np.array(labels)
    aucs = {k: roc_auc(y, [s[k] for s in stats]) for k in stats[0]}
    # the image score chosen on the other folds, per fold
    chosen = {}
    for f in fold_ids:
        o = np.array([ff != f for ff in fold_of])
        chosen[f] = max(stats[0], key=lambda k: roc_auc(y[o], [s[k] for s, oo in zip(stats, o) if oo]))
    cf_score = [s[chosen[f]] for s, f in zip(stats, fold_of)]
    pmc = pm.compute()
    real_flag05 = float(np.mean([v[1][j05] for v in real.values()])) if real else float("nan")
    summary = {
        "n_fake": len(fake), "n_real": len(real),
        "best_f1": float(np.mean([v[3] for v in fake.values()])),
        "f1_at_0.5": float(np.mean([v[1][j05] for v in fake.values()])),
        "iou_at_0.5": float(np.mean([v[2][j05] for v in fake.values()])),
        "f1_cf_best_rule": float(np.mean(f1_cf)), "iou_cf_best_rule": float(np.mean(iou_cf)),
        "f1_cf_fpr5_rule": float(np.mean(f1_fpr)), "iou_cf_fpr5_rule": float(np.mean(iou_fpr)),
        "real_pixels_flagged_at_0.5": real_flag05,
        "pixel_auc": pmc["pixel_auc"], "pixel_ap": pmc["pixel_ap"],
        "image_auc_cf": roc_auc(y, cf_score), "image_score_chosen": sorted(set(chosen.values())),
        **{f"image_auc_{k}": v for k, v in aucs.items()},
        "thresholds": per_fold_t,
    }
    return {"summary": summary}


# ------------------------------------------------------------------ a closed-form linear probe per patch
def patch_targets(targets: np.ndarray, side: int) -> np.ndarray:
    """(n, 224, 224) uint8 -> (n, side, side) edited fraction under each patch."""
    n, s, _ = targets.shape
    f = s // side
    return targets.reshape(n, side, f, side, f).astype(np.float32).mean(axis=(2, 4)) / 255.0


def grams(grids: np.ndarray, y: np.ndarray, win_fold: np.ndarray, k: int):
    """Per fold: (X^T X, X^T y, sum x, n) of the patch rows, X with a constant column."""
    out = []
    for f in range(k):
        idx = np.flatnonzero(win_fold == f)
        X = grids[idx].astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, grids.shape[1])
        X = np.concatenate([X, np.ones((len(X), 1), np.float32)], axis=1)
        t = y[idx].reshape(-1)
        out.append((X.T @ X, X.T @ t))
    return out


def ridge_maps(grids, y, win_fold, k, lam):
    """Out-of-fold patch predictions (n, side, side) of ridge fits, one per fold and lambda."""
    gs = grams(grids, y, win_fold, k)
    c = grids.shape[1]
    scale = np.ones(c + 1)
    G_all, b_all = sum(g for g, _ in gs), sum(b for _, b in gs)
    preds = {l: np.zeros(y.shape, np.float32) for l in lam}
    for f in range(k):
        G, b = G_all - gs[f][0], b_all - gs[f][1]
        n = G[-1, -1]
        idx = np.flatnonzero(win_fold == f)
        X = grids[idx].astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, c)
        for l in lam:
            reg = np.eye(c + 1) * l * n / 1000.0 * np.r_[np.diag(G)[:-1] / n, 0.0]  # scale-aware, bias free
            w = np.linalg.solve(G.astype(np.float64) + reg, b.astype(np.float64)).astype(np.float32)
            preds[l][idx] = (X @ w[:-1] + w[-1]).reshape(len(idx), *y.shape[1:])
    return preds


def run_ridge(a) -> dict:
    import torch
    grids, targets, meta = load_view(a.cache, a.name, a.view, a.blocks, a.second)
    rows = meta["rows"]
    folds = pair_folds([r["group"] for r in rows], a.folds, a.seed)
    win_fold = np.array([folds[r["group"]] for r in rows])
    y = patch_targets(targets, grids.shape[2])
    lams = [float(x) for x in a.lams.split(",")]
    preds = ridge_maps(grids, y, win_fold, a.folds, lams)
    results = {}
    for l, p in preds.items():
        prob = 1.0 / (1.0 + np.exp(-8.0 * (p - 0.5)))  # monotone squash into [0, 1]; ranks kept
        up = torch.nn.functional.interpolate(torch.from_numpy(prob)[:, None], size=(TILE, TILE), mode="bilinear",
                                             align_corners=False)[:, 0].numpy()
        maps = image_maps(up, rows, a.view)
        results[str(l)] = score_oof(maps, rows, folds, meta.get("data"))["summary"]
        s = results[str(l)]
        print(f"blocks {a.blocks} lambda {l}: best-F1 {s['best_f1']:.3f} F1cf {s['f1_cf_best_rule']:.3f} "
              f"IoUcf {s['iou_cf_best_rule']:.3f} pixAUC {s['pixel_auc']:.3f} imgAUC {s['image_auc_cf']:.3f}", flush=True)
    return {"setting": {k: str(v) for k, v in vars(a).items()}, "by_lambda": results,
            "summary": results[max(results, key=lambda k: results[k]["best_f1"])]}


# ------------------------------------------------------------------ the shipped localiser
def ship(a) -> dict:
    """CV (run_cv) -> mask threshold and image rule from the out-of-fold maps -> the decoder (ridge, or
    the fold's conv decoder and epochs) refitted on every pair, recentred so map >= 0.5 is the mask,
    saved with its rule and CV numbers."""
    from fakescope.evaluation.localization import PixelMetrics, top_mean
    from fakescope.localize.localizer import Localizer, LocalizerConfig, _Prepared
    from fakescope.evaluation.metrics import threshold_at_fpr

    if a.second:
        raise ValueError("ship: the ridge decoder reads one backbone's grid (no --second)")
    res = run_cv(a)
    maps, rows, folds = a._maps, a._rows, a._folds
    first = {}
    for r in rows:
        first.setdefault(r["image"], r)
    masks = _masks({first[i]["name"] for i in maps}, a._data)
    pm = PixelMetrics()
    for i, m in maps.items():
        r = first[i]
        pm.update(m, masks[r["name"]] if r["label"] else None, bool(r["label"]))
    t, f1_t, fpr_t = pm.best_fixed_threshold(a.max_real_pixels)
    logit_t = np.log(t / (1 - t))
    def recentred(m):
        z = np.log(np.clip(m, 1e-7, 1 - 1e-7) / np.clip(1 - m, 1e-7, None)) - logit_t
        return 1 / (1 + np.exp(-z))
    from fakescope.evaluation.metrics import roc_auc
    y = np.array([first[i]["label"] for i in maps])
    rm = {i: recentred(m) for i, m in maps.items()}
    if a.save_maps:  # the out-of-fold maps as the shipped (recentred) localiser draws them
        np.save(a.save_maps, np.stack([rm[i] for i in sorted(rm)]).astype(np.float16))
    aucs = {q: roc_auc(y, [top_mean(rm[i], q) for i in maps]) for q in TOPK}
    q = max(aucs, key=aucs.get)
    real_scores = [top_mean(rm[i], q) for i in maps if first[i]["label"] == 0]
    rule = {"fraction": q, "threshold": threshold_at_fpr(real_scores, a.max_real_images, margin="midpoint"), "max_real_fpr": a.max_real_images,
            "chosen_on": f"out-of-fold maps of {len(maps)} CocoGlide dev images ({a.folds}-fold CV by pair)"}
    grids, targets, meta = load_view(a.cache, a.name, a.view, a.blocks)
    one = len(a.blocks) == 1
    decoder = dict(stages=0, solver="ridge", ridge_lambda=a.ridge_lambda) if a.solver == "ridge" else \
        dict(decoder=a.decoder, width=a.width, stages=a.stages, target_size=a.target_size, epochs=a.epochs,
             lr=a.lr, seed=a.seed)  # the same decoder and training as each fold's
    cfg = LocalizerConfig(backbone="clip-b16?resize=resize" + (f"&patch_layer={a.blocks[0]}" if one else ""),
                          blocks=None if one else list(a.blocks), **decoder,
                          read="whole" if a.view == "whole" else "tiles",
                          tile_stride=a.ship_stride or (int(a.view.split(":")[1]) if a.view != "whole" else 112))
    loc = Localizer(cfg)
    loc.fit_grids(_Prepared([grids], [], targets), None, log=None)
    loc.recenter(t)
    loc.image_rule = rule
    loc.metadata.update({"data": ["cocoglide/dev.tar (all 192 pairs)"], "cross_validation": res["summary"],
                         "threshold_calibration": {"rule": f"best mean F1 among thresholds flagging <= {a.max_real_pixels} "
                                                   "of real pixels, on the out-of-fold maps; folded into the decoder",
                                                   "threshold_before_recentring": t, "f1": f1_t, "real_pixel_fpr": fpr_t},
                         "image_rule_auc_by_fraction": {str(k): v for k, v in aucs.items()},
                         "command": a.command})
    loc.save(a.ship_to)
    return {"threshold": t, "f1_at_t": f1_t, "real_pixel_fpr_at_t": fpr_t, "image_rule": rule, "aucs": aucs,
            "cv": res["summary"]}


# ------------------------------------------------------------------ the verdict: detector + map, cross-fitted
def verdict_report(maps_npy: Path, detections: Path, fraction: float, max_fpr: float, folds_k: int, seed: int = 0) -> dict:
    """Edited vs pristine CocoGlide images: the detector alone, the map's edit score alone, and the
    OR rule (fake if the detector says fake or edit score >= t), t cut per fold at <= max_fpr of
    the OTHER folds' pristine images (out-of-fold maps)."""
    from fakescope.evaluation.localization import top_mean
    from fakescope.evaluation.metrics import roc_auc
    from fakescope.evaluation.metrics import threshold_at_fpr
    maps = np.load(maps_npy).astype(np.float32)
    rows = json.loads(maps_npy.with_suffix(".json").read_text())
    det = {}
    for line in detections.read_text().splitlines():
        r = json.loads(line)
        det[r["path"].split("::")[-1]] = r
    folds = pair_folds([r["group"] for r in rows], folds_k, seed)
    y = np.array([r["label"] for r in rows])
    f = np.array([folds[r["group"]] for r in rows])
    edit = np.array([top_mean(m, fraction) for m in maps])
    d = [det[r["name"].split("::")[-1]] for r in rows]
    p_fake = np.array([x["score"] for x in d])
    det_fake = np.array([x["label"] == "fake" for x in d])
    flagged = np.zeros(len(rows), bool)
    cuts = {}
    for k in sorted(set(f)):
        cuts[int(k)] = threshold_at_fpr(list(edit[(f != k) & (y == 0)]), max_fpr, margin="midpoint")
        flagged[f == k] = edit[f == k] >= cuts[int(k)]
    both = det_fake | flagged
    rate = lambda v, lab: float(v[y == lab].mean())  # noqa: E731
    return {"n_edited": int(y.sum()), "n_pristine": int((y == 0).sum()), "fraction": fraction,
            "auc_detector": roc_auc(y, p_fake), "auc_edit_score": roc_auc(y, edit),
            "detector_fake": {"edited": rate(det_fake, 1), "pristine": rate(det_fake, 0)},
            "edit_rule": {"edited": rate(flagged, 1), "pristine": rate(flagged, 0)},
            "or_rule": {"edited": rate(both, 1), "pristine": rate(both, 0)},
            "cuts_per_fold": cuts, "edited_called_real_by_detector_but_flagged": int((flagged & ~det_fake & (y == 1)).sum())}


# ------------------------------------------------------------------ cost of a read
def cost(model, sizes: str, strides: str, repeat: int) -> list[dict]:
    """Seconds per image of predict_maps on photo-like synthetic images (smooth + noise, decoded
    from PNG bytes), the whole read and tiles at each stride; the best of `repeat` runs."""
    import dataclasses
    import io

    from PIL import Image

    from fakescope.localize.evaluate import load_localizer
    base = load_localizer(model)
    rng = np.random.default_rng(0)
    out = []
    for wh in sizes.split(","):
        w, h = map(int, wh.split("x"))
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h))], -1)
        arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        data = buf.getvalue()
        for read, stride in [("whole", 0)] + [("tiles", int(s)) for s in strides.split(",")]:
            cfg = dataclasses.replace(base.config, read=read, tile_stride=stride or base.config.tile_stride)
            loc = dataclasses.replace(base, config=cfg, _backbones=base._backbones)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                loc.predict_maps([data])
                times.append(time.perf_counter() - t)
            best = min(times)
            out.append({"size": wh, "read": read, "stride": stride or None, "seconds": round(best, 3),
                        "seconds_per_megapixel": round(best / (w * h / 1e6), 3)})
            print(out[-1], flush=True)
    return out


# ------------------------------------------------------------------ the image rule's threshold on more kinds of real photos
def rule_report(maps_npy: Path, detections: Path, fraction: float, calib: list[Path], held_out: list[Path],
                max_fpr: float) -> dict:
    """The image threshold flagging <= max_fpr of the CocoGlide originals (out-of-fold maps) AND of
    each calibration set of other real photos (scan --localize JSONL: edit_score); the rates it gives
    on CocoGlide edits / originals and on held-out real photos (no edited image enters the choice)."""
    from fakescope.evaluation.localization import top_mean
    from fakescope.evaluation.metrics import threshold_at_fpr
    maps = np.load(maps_npy).astype(np.float32)
    rows = json.loads(maps_npy.with_suffix(".json").read_text())
    y = np.array([r["label"] for r in rows])
    edit = np.array([top_mean(m, fraction) for m in maps])
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]  # noqa: E731
    cal = {str(p): [r["edit_score"] for r in read(p) if r.get("edit_score") is not None] for p in calib}
    cuts = {"cocoglide originals (out-of-fold)": threshold_at_fpr(edit[y == 0], max_fpr, margin="midpoint"),
            **{k: threshold_at_fpr(v, max_fpr, margin="midpoint") for k, v in cal.items()}}
    t = max(cuts.values())
    det = {}
    for line in detections.read_text().splitlines():
        r = json.loads(line)
        det[r["path"].split("::")[-1]] = r["label"] == "fake"
    det_fake = np.array([det[r["name"].split("::")[-1]] for r in rows])
    flagged = edit >= t
    out = {"threshold": t, "cuts": cuts, "fraction": fraction,
           "cocoglide": {"edited_flagged": float(flagged[y == 1].mean()), "originals_flagged": float(flagged[y == 0].mean()),
                         "edited_fake_either": float((flagged | det_fake)[y == 1].mean()),
                         "originals_fake_either": float((flagged | det_fake)[y == 0].mean())},
           "held_out": {}}
    for p in held_out:
        rs = [r for r in read(p) if r.get("edit_score") is not None]
        f = np.array([r["edit_score"] >= t for r in rs])
        d = np.array([r["score"] >= r["threshold"] for r in rs])
        out["held_out"][str(p)] = {"n": len(rs), "flagged": float(f.mean()), "fake_either": float((f | d).mean()),
                                   "detector_fake": float(d.mean())}
    return out


# ------------------------------------------------------------------ what a decoder costs to train
def decoder_cost(channels: int = 768, grid: int = 14, target: int = 56, batch: int = 16, steps: int = 3) -> list[dict]:
    """Seconds per window of one AdamW step (forward + backward, 1 thread, random features) of our
    small decoder (width 64, as in the CV) and DeCLIP's conv-20, on a grid x grid x channels input."""
    import torch
    from torch.nn import functional as F

    from fakescope.localize.decoder import PRESETS, ConvDecoder
    torch.set_num_threads(1)
    x, y = torch.randn(batch, channels, grid, grid), torch.rand(batch, 1, target, target)
    out = []
    for name, kw in (("fakescope width 64", dict(width=64, **PRESETS["fakescope"])), ("declip-conv20", PRESETS["declip-conv20"])):
        d = ConvDecoder(channels, grid=grid, output_size=target, **kw)
        opt = torch.optim.AdamW(d.parameters(), 1e-3)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(d(x, size=target), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        out.append({"decoder": name, "parameters": sum(p.numel() for p in d.parameters()),
                    "seconds_per_window": round(min(times[1:]) / batch, 4)})
        print(out[-1], flush=True)
    return out


# ------------------------------------------------------------------ a saved localiser on a cached view, per kind of edit
def apply_report(model, cache: Path, name: str, view: str, by: str) -> dict:
    """Per-image numbers of a saved localiser (default: the shipped one) on a cached view of a
    make-edits folder, window logits stitched as the product stitches them; means per value of the
    table.csv column `by` (e.g. mechanism)."""
    import csv

    import torch

    from fakescope.evaluation.localization import best_f1, top_mean
    from fakescope.evaluation.metrics import roc_auc
    from fakescope.localize import tiles
    from fakescope.localize.evaluate import load_localizer
    loc = load_localizer(model)
    k = loc.spec.patch_layer
    grids, _, meta = load_view(cache, name, view, [k])
    rows, data = meta["rows"], meta["data"]
    logits = loc._all_logits([grids], 32).numpy()
    masks = _masks({r["name"] for r in rows}, data)
    kinds = {}
    with open(Path(data) / "table.csv", newline="") as f:
        for r in csv.DictReader(f):
            kinds[r["fake"]] = r[by]
    by_image: dict[int, list[int]] = {}
    for j, r in enumerate(rows):
        by_image.setdefault(r["image"], []).append(j)
    per, labels, scores = [], [], []
    for i, js in by_image.items():
        r = rows[js[0]]
        z = tiles.stitch(logits[js], [tuple(rows[j]["box"]) for j in js], tuple(r["tiled"]), tuple(r["size"]))
        m = 1.0 / (1.0 + np.exp(-z))
        labels.append(r["label"])
        scores.append(top_mean(m, loc.image_rule["fraction"]))
        if r["label"] == 1:
            mk = masks[r["name"]] > 0
            pred = m >= 0.5
            tp = float((pred & mk).sum())
            per.append({"kind": kinds[str(Path(r["name"]).relative_to(data))], "best_f1": best_f1(m, mk),
                        "f1": 2 * tp / (pred.sum() + mk.sum()), "iou": tp / float((pred | mk).sum()),
                        "edit_score": scores[-1]})
    real = np.array([s for s, y in zip(scores, labels) if y == 0])
    out = {"model": str(model or "shipped"), "n_edited": len(per), "n_real": int(len(real)), "by": by, "groups": {}}
    for kind in sorted({p["kind"] for p in per}) + ["all"]:
        ps = [p for p in per if kind in ("all", p["kind"])]
        es = [p["edit_score"] for p in ps]
        out["groups"][kind] = {"n": len(ps), **{m_: float(np.mean([p[m_] for p in ps])) for m_ in ("best_f1", "f1", "iou")},
                               "image_auc_vs_untouched": roc_auc(np.r_[np.ones(len(es)), np.zeros(len(real))], np.r_[es, real]),
                               "flagged": float(np.mean(np.array(es) >= loc.image_rule["threshold"]))}
        print(kind, {k_: round(v, 3) if isinstance(v, float) else v for k_, v in out["groups"][kind].items()}, flush=True)
    return out
