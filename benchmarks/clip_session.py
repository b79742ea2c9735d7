"""clip-b16 forward speed under ONNX Runtime session settings (issue 15: measure and tune).

For each setting, images/s of `OnnxBackbone.forward` on a pre-stacked batch of 8 preprocessed
images (clip-b16 runs one image per ONNX call, see backbones/offline.py, so the batch size of the
pipeline only sets how often decoding hands over). Settings: intra-op threads, graph
optimisation level, spinning. Prints a table and the load average at the start and end: run it
on an idle machine.

    python benchmarks/clip_session.py --seconds 8 --json runs/clip-session.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np


def measure(backbone, x: np.ndarray, seconds: float) -> float:
    backbone.forward(x[:1])  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        backbone.forward(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import onnxruntime as ort
    from PIL import Image

    from fakescope.backbones import parse_spec, preprocess
    from fakescope.backbones.offline import OnnxBackbone, _resolve

    spec = parse_spec("clip-b16")
    rng = np.random.default_rng(0)
    x = np.stack([preprocess(Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)), spec)
                  for _ in range(8)])
    graph = _graph(spec)
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    rows, load0 = [], os.getloadavg()[0]
    for threads, (level_name, level), spinning in itertools.product(args.threads, levels.items(), ("0", "1")):
        os.environ["FAKESCOPE_THREADS"] = str(threads)
        bb = OnnxBackbone(spec, _resolve(spec.weights))
        opts = ort.SessionOptions()  # the same session, rebuilt with this setting
        opts.intra_op_num_threads, opts.graph_optimization_level, opts.log_severity_level = threads, level, 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        bb.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        rate = measure(bb, x, args.seconds)
        rows.append({"threads": threads, "graph_optimization": level_name, "spinning": spinning, "images_per_s": round(rate, 2)})
        print(f"threads {threads}  graph {level_name:5s}  spinning {spinning}  {rate:6.2f} img/s", flush=True)
    out = {"rows": rows, "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "onnxruntime": ort.__version__, "cpus": os.cpu_count()}
    print(f"load average {out['load_average'][0]} at start, {out['load_average'][1]} at end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def _graph(spec) -> bytes:
    """The clip-b16 graph as shipped: its `image_embeds` output is all the pooled forward reads."""
    import onnx

    from fakescope.backbones.offline import _resolve
    return onnx.load(_resolve(spec.weights)).SerializeToString()


if __name__ == "__main__":
    main()
