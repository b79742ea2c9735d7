"""Scan speed of whole detectors (backbone, every expert, head, "uncertain" rule), side by side:
Detector.iter_predict over synthetic photo-like JPEGs (throughput.py's), per input size. A fused
detector runs every expert's backbone on every image, whether or not the expert speaks for it.

    python benchmarks/model_throughput.py default runs/default-v4 --inputs 32px 1024x1536 --json runs/model-throughput.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from throughput import INPUTS, pipeline_steps, rate, write_photos

from fakescope.data.samples import Sample
from fakescope.detector import load_detector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--inputs", nargs="+", default=["32px", "1024x1536"], choices=list(INPUTS))
    ap.add_argument("--n", type=int, default=48, help="distinct files per input kind")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: write_photos(Path(tmp), name, INPUTS[name], args.n, seed=i) for i, name in enumerate(args.inputs)}
        for model in args.models:
            det = load_detector(model)
            for name, paths in files.items():
                ips = rate(pipeline_steps(det, [Sample(path=p) for p in paths], args.workers), args.seconds, args.n)
                out[f"{model} {name}"] = round(ips, 2)
                print(f"{model} ({det.id} v{det.version}) on {name}: {ips:.2f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
