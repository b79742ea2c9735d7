"""Does the JPEG decode path change a detector's verdict? A test-time screen (issue 17, results.md 11.14).

A large JPEG is decoded with DCT scaling (`pipeline._draft`: libjpeg scales by 1/2, 1/4 or 1/8
while the image stays at least the model's input size), then resized to the input. A 12 MP camera
photo is thus shrunk 8x inside the JPEG decoder, a 1024 px fake 4x, a 640 px COCO photo 2x, and a
500 px ImageNet photo not at all. If a detector learnt the look of one of those paths, its verdict
follows the path. This scores each source's images with one detector four ways: as it reads them,
and with DCT scaling allowed only while the image stays at least 2x or 4x its input, or never (a
full decode, then the spec's own resize). Same head, same threshold.

    python benchmarks/core_problem/decode_path.py MODEL ../data-extra/photos-digicam/train.tar ...
"""
from __future__ import annotations

import math
import sys

import numpy as np

import fakescope.pipeline as pipeline
from fakescope import load_detector
from fakescope.data.sources import read_source
from fakescope.evaluation.metrics import roc_auc

GAPS = (None, 2, 4, math.inf)  # None: the spec's own rule


def decode_at(gap, own):
    """A stand-in for `own` (pipeline._draft): DCT scaling only while both sides stay >= gap x the input."""
    if gap is None:
        return own
    return lambda spec: own(spec) if spec.kind == "imagesize" else (
        None if math.isinf(gap) else math.ceil(gap * spec.input_size))


def main() -> None:
    det = load_detector(sys.argv[1])
    own = pipeline._draft
    print(f"model {sys.argv[1]}, threshold {det.threshold:.4f}")
    try:
        for source in sys.argv[2:]:
            samples = list(read_source(source))
            y = np.array([s.label for s in samples])
            for gap in GAPS:
                pipeline._draft = decode_at(gap, own)
                s = np.array([r.score if r.score is not None else np.nan
                              for batch in det.iter_predict(samples) for r in batch], float)
                ok = ~np.isnan(s)
                name = "as the spec reads" if gap is None else ("full decode" if math.isinf(gap) else f"DCT while >= {gap}x")
                line = f"{source:50s} {name:18s} reals called fake {np.mean(s[ok & (y == 0)] >= det.threshold):.3f}"
                if (y == 1).any() and (y == 0).any():
                    line += (f"  fakes found {np.mean(s[ok & (y == 1)] >= det.threshold):.3f}"
                             f"  ROC-AUC {roc_auc(y[ok], s[ok]):.3f}")
                print(line, flush=True)
    finally:
        pipeline._draft = own


if __name__ == "__main__":
    main()
