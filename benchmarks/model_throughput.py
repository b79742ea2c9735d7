"""Scan speed of whole detectors (backbone, every expert, head, "uncertain" rule), side by side:
Detector.iter_predict over synthetic photo-like JPEGs (throughput.py's), per input size. A fused
detector runs each expert only where it can change the verdict (detector.py `_fused_scores`);
`--every-expert` runs every expert on every image, as a scan did before.

    python benchmarks/model_throughput.py default runs/default-v4 --inputs 32px 1024x1536 --json runs/model-throughput.json
    python benchmarks/model_throughput.py default --inputs --data camera=../data-extra/photos-digicam/train.tar

`--data NAME=SOURCE` times the first `--n` images of a source (a folder or tar fakescope reads) too:
how often a fused detector's referee runs depends on how many images its voters call fake.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from throughput import INPUTS, pipeline_steps, rate, write_photos

from fakescope.data.samples import Sample
from fakescope.data.sources import load_labelled
from fakescope.detector import load_detector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--inputs", nargs="*", default=["32px", "1024x1536"], choices=list(INPUTS))
    ap.add_argument("--data", action="append", default=[], metavar="NAME=SOURCE", help="real files to time too")
    ap.add_argument("--n", type=int, default=48, help="distinct files per input kind")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--every-expert", action="store_true", help="a fused detector runs every expert on every image")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: [Sample(path=p) for p in write_photos(Path(tmp), name, INPUTS[name], args.n, seed=i)]
                 for i, name in enumerate(args.inputs)}
        for spec in args.data:
            name, _, source = spec.partition("=")
            files[name] = list(itertools.islice(load_labelled(source), args.n))
        for model in args.models:
            det = load_detector(model)
            det.every_expert = args.every_expert
            for name, samples in files.items():
                ips = rate(pipeline_steps(det, samples, args.workers), args.seconds, args.n)
                scored = [r for batch in det.iter_predict(samples) for r in batch if r.score is not None]
                fake = sum(r.score >= det.threshold for r in scored) / max(1, len(scored))
                out[f"{model} {name}"] = {"images_per_s": round(ips, 2), "called_fake": round(fake, 3)}
                print(f"{model} ({det.id} v{det.version}) on {name}: {ips:.2f} images/s "
                      f"({fake:.0%} of these files score at or over the threshold)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
