"""Where does scan time go? Decode+preprocess vs bare forward vs the whole pipeline, per backbone.

For each backbone and input kind (synthetic photo-like JPEGs, q90, written to a temp dir):
  decode   `prepare` in a loop (1 thread), and `iter_items` with a pool of w workers (w > 1)
  forward  backbone.forward on pre-stacked, preprocessed batches, every --batch-sizes value
           (input-independent: every input is preprocessed to the same square, so measured once per backbone)
  pipeline Detector.iter_predict (iter_items + batched + forward + a random linear head) at the best
           forward batch size, for each --workers value
and pipeline / min(decode at the same worker count, best forward). With w=1 nothing overlaps, so the
ceiling there is 1 / (1/decode + 1/forward), below 100%. Run on an idle machine.

    python benchmarks/throughput.py --threads 1 --json runs/throughput-t1.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

INPUTS = {"32px": (32, 32), "256px": (256, 256), "1024x1536": (1024, 1536)}  # name -> (width, height)


def write_photos(folder: Path, name: str, size: tuple[int, int], n: int, seed: int) -> list[str]:
    """n distinct photo-like JPEGs: smooth gradients and waves, soft-edged shapes, sensor-like noise."""
    rng, (w, h), paths = np.random.default_rng(seed), size, []
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x / w, y / h
    for i in range(n):
        img = np.empty((h, w, 3), np.float32)
        for c in range(3):
            a, b, fx, fy, phase = rng.uniform(-1, 1, 2).tolist() + rng.uniform(0.3, 3, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] = 128 + 60 * (a * x + b * y) + 40 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(3, 9))):
            x0, x1 = sorted(rng.uniform(0, w, 2).tolist())
            y0, y1 = sorted(rng.uniform(0, h, 2).tolist())
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        pil = pil.filter(ImageFilter.GaussianBlur(max(w, h) / 400))
        noisy = np.asarray(pil, np.float32) + rng.standard_normal((h, w, 3), dtype=np.float32) * 6
        path = folder / f"{name}-{i:03d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def rate(steps, seconds: float, n: int) -> float:
    """images/s of a stream of per-step image counts; the first step is warm-up (untimed).
    Runs until at least `seconds` have passed and at least `n` images were counted."""
    steps = iter(steps)
    next(steps)
    count, t0 = 0, time.perf_counter()
    for k in steps:
        count += k
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and count >= n:
            break
    steps.close()  # stops iter_items; its pool finishes what is queued, outside the clock
    return count / elapsed


def decode_steps(samples, spec, workers: int):
    from fakescope.pipeline import iter_items, prepare
    if workers <= 1:  # plain `prepare`, no pool (what iter_items does with workers=1)
        for s in itertools.cycle(samples):
            yield len(prepare(s, spec))
    else:
        for _ in iter_items(itertools.cycle(samples), spec, workers=workers):
            yield 1


def forward_steps(backbone, batches):
    for x in itertools.cycle(batches):
        backbone.forward(x)
        yield len(x)


def pipeline_steps(detector, samples, workers: int):
    for results in detector.iter_predict(itertools.cycle(samples), workers=workers):
        yield len(results)


def machine_info(threads: int | None) -> dict:
    import onnxruntime
    import PIL
    import torch
    from fakescope.backbones.offline import _threads
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "loadavg_1m": os.getloadavg()[0], "python": platform.python_version(), "numpy": np.__version__,
            "pillow": PIL.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "--threads": threads, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "onnx_intra_op_threads": _threads(),
            **{k: os.environ.get(k) for k in ("FAKESCOPE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}


def main() -> None:
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["effnet-lite0", "rn50-nsfw", "vit-s14-focus", "clip-b16"])
    ap.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    ap.add_argument("--n", type=int, default=64, help="distinct files per input kind (default 64)")
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum time per measurement (default 5)")
    ap.add_argument("--batch-sizes", type=ints, default=[1, 4, 8, 16, 32], help="forward batch sizes (default 1,4,8,16,32)")
    ap.add_argument("--workers", type=ints, default=[1, 2], help="decode worker counts for decode and pipeline (default 1,2)")
    ap.add_argument("--threads", type=int, default=None,
                    help="compute threads: sets FAKESCOPE_THREADS (ONNX intra-op) and torch.set_num_threads")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the raw numbers here")
    args = ap.parse_args()

    if args.threads:
        os.environ["FAKESCOPE_THREADS"] = str(args.threads)  # read when an ONNX session is built
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from fakescope.backbones import load_backbone
    from fakescope.data.samples import Sample
    from fakescope.detector import Detector
    from fakescope.features import feature_vector
    from fakescope.heads.linear import LinearProbe
    from fakescope.pipeline import prepare

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    fmt = lambda d, f="{:.1f}": " / ".join(f.format(v) for v in d.values())  # noqa: E731
    ws = " / ".join(f"w={w}" for w in args.workers)
    info = machine_info(args.threads)
    if info["loadavg_1m"] > 0.5:
        log(f"warning: 1-minute load average is {info['loadavg_1m']:.2f}; the machine is not idle")
    results, forward_by_backbone = [], {}
    with tempfile.TemporaryDirectory(prefix="fakescope-throughput-") as tmp:
        files = {}
        for i, name in enumerate(args.inputs):
            log(f"writing {args.n} x {name} JPEGs")
            files[name] = [Sample(path=p) for p in write_photos(Path(tmp), name, INPUTS[name], args.n, seed=i)]
        for bname in args.backbones:
            bb = load_backbone(bname)
            spec = bb.spec
            arrays = [it.array for s in files[args.inputs[0]] for it in prepare(s, spec)]
            forward = {}
            for bs in args.batch_sizes:  # distinct content per batch, cycling through the files
                batches = [np.stack([arrays[(i * bs + j) % len(arrays)] for j in range(bs)])
                           for i in range(max(1, len(arrays) // bs))]
                forward[bs] = rate(forward_steps(bb, batches), args.seconds, args.n)
                log(f"{bname} forward bs={bs}: {forward[bs]:.1f} img/s")
            best_bs = max(forward, key=forward.get)
            forward_by_backbone[bname] = forward
            dim = feature_vector(bb.forward(np.stack(arrays[:1])), spec).shape[1]
            rng = np.random.default_rng(0)
            head = LinearProbe.from_state({"l2": 1e-3}, {
                "mean": np.zeros(dim, np.float32), "std": np.ones(dim, np.float32),
                "weight": rng.standard_normal(dim).astype(np.float32) / dim ** 0.5, "bias": np.zeros(1, np.float32)})
            detector = Detector(spec=spec, head=head, batch_size=best_bs, _backbone=bb)
            for name in args.inputs:
                decode = {w: rate(decode_steps(files[name], spec, w), args.seconds, args.n) for w in args.workers}
                pipeline = {w: rate(pipeline_steps(detector, files[name], w), args.seconds, args.n)
                            for w in args.workers}
                ratio = {w: pipeline[w] / min(decode[w], forward[best_bs]) for w in args.workers}
                log(f"{bname} {name}: decode {fmt(decode)}, pipeline {fmt(pipeline)} img/s ({ws})")
                results.append({"backbone": bname, "input": name, "decode": decode, "forward_best": forward[best_bs],
                                "best_batch_size": best_bs, "pipeline": pipeline, "pipeline_vs_slower": ratio})

    print("## Machine\n")
    for k, v in info.items():
        print(f"- {k}: {v}")
    print(f"- files per input: {args.n}, min seconds per measurement: {args.seconds}\n")
    print("## Throughput (images/s; decode w=1 is `prepare` single-threaded, w>1 the `iter_items` pool)\n")
    print(f"| backbone | input | decode+preprocess ({ws}) | forward (best batch) | pipeline ({ws}) "
          f"| pipeline vs slower stage ({ws}) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backbone']} | {r['input']} | {fmt(r['decode'])} | {r['forward_best']:.1f} "
              f"(bs {r['best_batch_size']}) | {fmt(r['pipeline'])} | {fmt(r['pipeline_vs_slower'], '{:.0%}')} |")
    print("\n## Forward by batch size (images/s)\n")
    print("| backbone | " + " | ".join(f"bs {b}" for b in args.batch_sizes) + " |")
    print("|---|" + "---|" * len(args.batch_sizes))
    for bname, forward in forward_by_backbone.items():
        print(f"| {bname} | " + " | ".join(f"{v:.1f}" for v in forward.values()) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "results": results,
                                               "forward": forward_by_backbone}, indent=2) + "\n")


if __name__ == "__main__":
    main()
