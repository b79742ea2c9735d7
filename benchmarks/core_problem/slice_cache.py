"""Fill the feature cache of a spec whose columns are a slice of another cached spec's (issue 17).

`clip-b16?windows=3,4,5,6&pooled=0` reads exactly the last 3,072 columns of
`clip-b16?layers=6,8,10,12&windows=3,4,5,6` (one forward gives both): rather than run CLIP again
over every image and view (30 minutes here), copy those columns row by row into the second spec's
cache, then recompute `--check` images of a source from scratch and compare. results.md 11.11.

    python benchmarks/core_problem/slice_cache.py "clip-b16?layers=6,8,10,12&windows=3,4,5,6" \
        "clip-b16?windows=3,4,5,6&pooled=0" --columns 3584: --check ../shared/data/wild/train.tar
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from safetensors import safe_open

from fakescope.backbones import load_backbone, parse_spec
from fakescope.features import FeatureCache, extract
from fakescope.training.common import load_sources


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source_spec")
    ap.add_argument("target_spec")
    ap.add_argument("--columns", required=True, help="a Python slice of the source's columns, e.g. 3584:")
    ap.add_argument("--cache", default=".cache/features")
    ap.add_argument("--check", help="a source whose first images are recomputed and compared")
    ap.add_argument("--check-n", type=int, default=12)
    a = ap.parse_args()
    cols = slice(*[int(x) if x else None for x in a.columns.split(":")])
    src, dst = FeatureCache(a.cache, parse_spec(a.source_spec)), FeatureCache(a.cache, parse_spec(a.target_spec))
    shards = sorted(src.dir.glob("shard-*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), "numpy") as f:
            keys = json.loads(f.metadata()["keys"])
            rows = f.get_tensor("features")
        todo = [i for i, k in enumerate(keys) if k not in dst]
        if todo:
            dst.put([keys[i] for i in todo], rows[todo][:, cols])
    print(f"{len(dst)} rows in {dst.dir} from {len(shards)} shards of {src.dir}")
    if a.check:
        samples = load_sources([a.check], a.check_n // 2, 0)
        _, fresh, _ = extract(samples, load_backbone(a.target_spec), None)
        _, copied, _ = extract(samples, load_backbone(a.target_spec), dst)
        print(f"recomputed {len(fresh)} images: max |difference| {np.abs(fresh - copied).max():.2e}")


if __name__ == "__main__":
    main()
