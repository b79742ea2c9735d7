"""Does CLIP read generator traces at native resolution? A leave-one-source-out screen (issue 17).

The shipped localiser finds synthesised pixels in CLIP's early blocks read at native resolution
(224 px windows, never resized: results.md 3.0). The detector reads the whole image shrunk to 224 px,
where those traces are gone. This screen reads every image of 224 px or more as up to four native
224 px windows (centred on its quadrants; one centred window when a side is under 448 px) and keeps,
for blocks 3, 4, 5, 6 and 8, the class token and the mean patch token of each window (one INT8
forward per window; saved under OUT as <source>.npz, reused when present). A logistic probe
(standardised, C = 0.01) on the window-averaged columns is fitted on every source but one and scores
the held-out source, alone and beside the default's columns (the cached clean-view rows of
`clip-b16?layers=2,...,12`); then the camera-photo false-positive rate, each photo folder held out
in turn, at the cut that calls 5% of the training reals fake. Images under 224 px (CIFAKE) have no
native window: the expert would not speak for them. A screen, not the protocol: results.md 11.11.

    python benchmarks/core_problem/native_windows.py runs/native-windows
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sklearn.metrics import roc_auc_score

from fakescope.backbones import load_backbone, preprocess
from fakescope.backbones.spec import native_windows
from fakescope.evaluation.protocols import device_fold, device_of
from fakescope.features import FeatureCache, extract
from fakescope.images import ImageError, decode_image
from fakescope.training.common import load_sources
from layer_subsets import BLOCKS as DEFAULT_BLOCKS, LAYERS as DEFAULT_LAYERS, SOURCES, fit_probe

WINDOW = 224
LAYERS = [3, 4, 5, 6, 8]
# columns per block k: its class token (c<k>) and mean patch token (m<k>), 768 each
BLOCKS = {}
for j, k in enumerate(LAYERS):
    BLOCKS[f"c{k}"] = np.arange(1536 * j, 1536 * j + 768)
    BLOCKS[f"m{k}"] = np.arange(1536 * j + 768, 1536 * (j + 1))
NATIVE = {"c3-6": ["c3", "c4", "c5", "c6"], "m3-6": ["m3", "m4", "m5", "m6"], "c3-6+m3-6": [f"{t}{k}" for t in "cm" for k in (3, 4, 5, 6)],
          "m5": ["m5"], "c8+m8": ["c8", "m8"], "all": list(BLOCKS)}
V6 = np.concatenate([np.arange(DEFAULT_BLOCKS[b].start, DEFAULT_BLOCKS[b].stop) for b in ("emb", "L6", "L8", "L10", "L12")])
HELD_OUT = ["wild", "sd512", "people"]
PHOTOS = ["digicam", "mei"]


def windows(img) -> list:
    """The image's distinct native WINDOW px windows, as `?windows=` reads them (up to four, centred on its quadrants)."""
    return list({w.tobytes(): w for w in native_windows(img, WINDOW)}.values())


def native_features(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """source -> (window-averaged columns, labels, has-a-window), rows in load_sources order."""
    bb = load_backbone("clip-b16?layers=" + ",".join(map(str, LAYERS)))  # the graph then outputs these blocks
    names = [bb._layer_name(k) for k in LAYERS]
    data = {}
    for name, path in SOURCES.items():
        f = out / f"{name}.npz"
        if not f.exists():
            samples = load_sources([path], 1000, 0)

            def read(s):
                try:
                    img = decode_image(s.data if s.data is not None else s.path, name=s.path).convert("RGB")
                except ImageError:
                    return None
                if min(img.size) < WINDOW:
                    return None
                return np.stack([preprocess(w, bb.spec) for w in windows(img)])

            X = np.zeros((len(samples), 1536 * len(LAYERS)), np.float32)
            has = np.zeros(len(samples), bool)
            with ThreadPoolExecutor(2) as pool:
                for i, arrays in enumerate(pool.map(read, samples)):
                    if arrays is None:
                        continue
                    got = bb._run(names, arrays)
                    X[i] = np.concatenate([np.concatenate([got[n][:, 0], got[n][:, 1:].mean(1)], 1) for n in names],
                                          1).mean(0)
                    has[i] = True
            np.savez(f, X=X.astype(np.float16), y=np.array([s.label for s in samples]), has=has)
            print(f"{name}: {has.sum()} of {len(samples)} images with a native window", flush=True)
        d = np.load(f)
        data[name] = (d["X"].astype(np.float32), d["y"], d["has"])
    return data


def default_columns() -> dict[str, np.ndarray]:
    """source -> the default's columns of every image as it is (view 0), NaN where it failed; read from
    the feature cache `fakescope validate` filled for `clip-b16?layers=2,...,12` (layer_subsets.py)."""
    backbone = load_backbone("clip-b16?layers=" + ",".join(map(str, DEFAULT_LAYERS)))
    cache = FeatureCache(".cache/features", backbone.spec)
    out = {}
    for name, path in SOURCES.items():
        samples = load_sources([path], 1000, 0)
        rows, X, _ = extract(samples, backbone, cache)
        D = np.full((len(samples), len(V6)), np.nan, np.float32)
        D[[i for i, _ in rows]] = X[:, V6]
        out[name] = D
    return out


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/native-windows")
    out.mkdir(parents=True, exist_ok=True)
    native, default = native_features(out), default_columns()
    table, devices = {}, {}  # source -> {column group: rows} of the images both read; photo -> device fold
    for name, (X, y, has) in native.items():
        keep = has & ~np.isnan(default[name]).any(1)
        table[name] = {"v6": default[name][keep], **{b: X[keep][:, c] for b, c in BLOCKS.items()}, "y": y[keep]}
        if name in PHOTOS:
            samples = [s for s, k in zip(load_sources([SOURCES[name]], 1000, 0), keep) if k]
            devices[name] = np.array([device_fold(device_of(s), 5, 0) for s in samples])
    recipes = {"v6 (default)": [["v6"]], **{f"native {k}": [v] for k, v in NATIVE.items()},
               **{f"v6 + native {k}": [["v6"] + v] for k, v in NATIVE.items() if k in ("m3-6", "c3-6+m3-6", "all")},
               "v6 | native all (mean logit)": [["v6"], NATIVE["all"]]}
    print("recipe".ljust(30) + "".join(f"{h:>20}" for h in HELD_OUT) + f"{'FPR device folds':>18}"
          + "".join(f"{'FPR ' + p:>12}" for p in PHOTOS))
    print(" " * 30 + f"{'AUC / real / fake':>20}" * len(HELD_OUT))
    for label, groups in recipes.items():
        def fit_score(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
            """Held-out scores (mean logit over the recipe's probes) and the cut calling 5% of training reals fake."""
            tr, te = [], []
            for cols in groups:
                X = np.concatenate([np.concatenate([table[n][c] for c in cols], 1)[m] for n, m in train.items()])
                y = np.concatenate([table[n]["y"][m] for n, m in train.items()])
                Xt = np.concatenate([np.concatenate([table[n][c] for c in cols], 1)[m] for n, m in test.items()])
                probe = fit_probe(X, y)
                tr.append(probe.decision_function(X[y == 0]))
                te.append(probe.decision_function(Xt))
            return np.mean(te, 0), float(np.quantile(np.mean(tr, 0), 0.95))

        everything = {n: np.ones(len(t["y"]), bool) for n, t in table.items() if n != "cifake"}
        cells = []
        for held in HELD_OUT:
            z, cut = fit_score({n: m for n, m in everything.items() if n != held}, {held: everything[held]})
            y = table[held]["y"]
            cells.append(f"{roc_auc_score(y, z):.3f} / {(z[y == 0] < cut).mean():.2f} / {(z[y == 1] >= cut).mean():.2f}")
        called, n_photos = 0, 0
        for fold in range(5):
            train = {n: (m if n not in PHOTOS else devices[n] != fold) for n, m in everything.items()}
            test = {n: devices[n] == fold for n in PHOTOS}
            z, cut = fit_score(train, test)
            called, n_photos = called + int((z >= cut).sum()), n_photos + len(z)
        cells.append(f"{called / n_photos:.3f}")
        for photo in PHOTOS:
            z, cut = fit_score({n: m for n, m in everything.items() if n != photo}, {photo: everything[photo]})
            cells.append(f"{(z >= cut).mean():.3f}")
        print(label.ljust(30) + "".join(f"{c:>20}" for c in cells[:3]) + f"{cells[3]:>18}"
              + "".join(f"{c:>12}" for c in cells[4:]), flush=True)


if __name__ == "__main__":
    main()
