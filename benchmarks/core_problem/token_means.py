"""Do CLIP's patch tokens add to its class tokens? A leave-one-source-out screen (issue 17).

v5/v6 read the class token of blocks 6, 8, 10, 12 (and the embedding). A block's patch tokens,
averaged over the image, might carry more of how the pixels were made than its class token. This
script reads 500 images per class from every source (the clean image and one thumbnail view, as
the default's recipe trains), keeps for blocks 4-12 both the class token and the mean patch token
(one INT8 forward each; saved under OUT as <source>.npz, reused when present), then fits one
logistic probe (standardised, C = 0.01) per column subset on every source but one and scores the
held-out source's clean images. A screen, not the protocol: results.md 11.9.

    python benchmarks/core_problem/token_means.py runs/token-means
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fakescope.backbones import load_backbone
from fakescope.backbones.spec import Features
from fakescope.data.augment import AugmentConfig
from fakescope.features import extract
from fakescope.training.common import load_sources
from layer_subsets import SOURCES, loso_screen  # this folder's screen (one probe per column subset, LOSO)

LAYERS = [4, 6, 8, 10, 12]
# columns: the 512-d embedding, then per block its class token (c<k>) and mean patch token (m<k>)
BLOCKS = {"emb": np.arange(512)}
for j, k in enumerate(LAYERS):
    BLOCKS[f"c{k}"] = np.arange(512 + 1536 * j, 512 + 1536 * j + 768)
    BLOCKS[f"m{k}"] = np.arange(512 + 1536 * j + 768, 512 + 1536 * (j + 1))
SUBSETS = {"emb+c6-12 (v6)": ["emb", "c6", "c8", "c10", "c12"],
           "emb+c6-12+m6-12": ["emb", "c6", "c8", "c10", "c12", "m6", "m8", "m10", "m12"],
           "emb+m6-12": ["emb", "m6", "m8", "m10", "m12"],
           "emb+c6-12+m10-12": ["emb", "c6", "c8", "c10", "c12", "m10", "m12"],
           "emb+c6-12+m4-8": ["emb", "c6", "c8", "c10", "c12", "m4", "m6", "m8"],
           "emb+c4-12+m4-12": list(BLOCKS)}


def token_features(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    bb = load_backbone("clip-b16?layers=" + ",".join(map(str, LAYERS)))

    def forward(batch, want_patches=False):  # block k -> [class token, mean of the patch tokens]
        names = list(dict.fromkeys([bb.pooled_name] + [bb._layer_name(k) for k in LAYERS]))
        got = bb._run(names, batch)
        pooled = got[bb.pooled_name][:, 0] if bb.pooled_is_token else got[bb.pooled_name]
        layers = {k: np.concatenate([got[bb._layer_name(k)][:, 0], got[bb._layer_name(k)][:, 1:].mean(1)], 1)
                  for k in LAYERS}
        return Features(pooled=np.ascontiguousarray(pooled, np.float32), layers=layers)

    bb.forward = forward
    data = {}
    for name, path in SOURCES.items():
        f = out / f"{name}.npz"
        if not f.exists():  # no feature cache: these columns are no spec's (a screen's own file)
            samples = load_sources([path], 500, 0)
            rows, X, _ = extract(samples, bb, None, views=range(2), augment=AugmentConfig(p_thumbnail=1.0))
            np.savez(f, X=X.astype(np.float16), y=np.array([samples[i].label for i, _ in rows]),
                     v=np.array([v for _, v in rows]))
        d = np.load(f)
        data[name] = (d["X"].astype(np.float32), d["y"], d["v"])
    return data


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/token-means")
    out.mkdir(parents=True, exist_ok=True)
    data = token_features(out)
    loso_screen(data, {subset: np.concatenate([BLOCKS[b] for b in blocks]) for subset, blocks in SUBSETS.items()})

if __name__ == "__main__":
    main()
