"""Local engine vs Ray (1 and 2 workers) on the same images: images/s and what Ray adds.

Every run is one whole job, `scale.jobs.scan_job` (ScoreBatch with the shipped detector, Parquet
parts of 100 images, a fresh output folder), over the first N images of --data (spread over the
source, so both classes are in). Each configuration runs twice, on --n-small and on --n-large
images, and the two wall times T(n) give

    steady img/s   (n_large - n_small) / (T_large - T_small): throughput once the models are up
    fixed s        T_small - n_small / steady: what a job costs before and around its images
                   (local: loading the model; Ray: starting one actor per worker, each
                   importing torch and loading the model, plus Ray Data's scheduling)

Ray's own start (`ray.init` of a local Ray) is timed once, apart. Ray's overhead is then
start-up = ray init + fixed(Ray) - fixed(local), and steady(Ray) / steady(local).

A local run uses --local-threads torch threads (0: all cores) in one process, decoding the next
batch while the model runs on this one; a Ray worker gets --cpus-per-worker CPUs and as many
torch threads. Ray runs its workers at nice 15 (Ray's default `worker_niceness`): on a machine
shared with other jobs they yield to them, the driver does not.

    python benchmarks/scale.py --data ../shared/data/cifake/val.tar --json runs/scale.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def timed_job(inputs, out: Path, opts) -> dict:
    from fakescope.scale.jobs import scan_job

    stamps: list[float] = []
    t0 = time.perf_counter()
    res = scan_job(inputs, out, opts=opts, shard_size=100, on_rows=lambda k: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    assert len(res.written) == res.n_shards, res
    shutil.rmtree(out, ignore_errors=True)
    return {"n": len(inputs), "total_s": round(total, 2), "first_result_s": round(stamps[0] - t0, 2)}


def pair(name: str, small, large, tmp: Path, opts_fn) -> dict:
    a = timed_job(small, tmp / f"{name}-s", opts_fn())
    b = timed_job(large, tmp / f"{name}-l", opts_fn())
    steady = (b["n"] - a["n"]) / max(b["total_s"] - a["total_s"], 1e-9)
    fixed = a["total_s"] - a["n"] / steady
    row = {"run": name, "small": a, "large": b, "steady_img_per_s": round(steady, 1), "fixed_s": round(fixed, 1),
           "img_per_s_large": round(b["n"] / b["total_s"], 1)}
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifake/val.tar")
    ap.add_argument("--n-small", type=int, default=200)
    ap.add_argument("--n-large", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    ap.add_argument("--local-threads", type=int, nargs="+", default=[1],
                    help="torch threads of the local runs (0: all cores); each runs before and after Ray")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from fakescope.scale.engines import EngineOptions
    from fakescope.scale.inputs import enumerate_inputs

    every = enumerate_inputs([args.data])
    step = max(1, len(every) // args.n_large)
    large = every.take(list(range(0, len(every), step))[:args.n_large])
    small = large.take(list(range(0, len(large), max(1, len(large) // args.n_small)))[:args.n_small])
    tmp = Path(tempfile.mkdtemp(prefix="fakescope-scale-"))
    rows, load = [], [round(os.getloadavg()[0], 1)]

    def local(tag: str) -> None:
        for t in args.local_threads:
            threads = t or os.cpu_count()
            rows.append(pair(f"local, {threads} torch thread{'s' if threads > 1 else ''} ({tag})", small, large, tmp,
                             lambda: EngineOptions(engine="local", threads=threads)))

    try:
        local("before Ray")
        import ray
        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR")
        ray_init = time.perf_counter() - t0
        print({"ray_init_s": round(ray_init, 2)}, flush=True)
        for w in args.workers:
            rows.append(pair(f"Ray, {w} worker{'s' if w > 1 else ''} x {args.cpus_per_worker:g} CPU", small, large, tmp,
                             lambda: EngineOptions(engine="ray", workers=w, cpus_per_worker=args.cpus_per_worker)))
        ray.shutdown()
        local("after Ray")
        load.append(round(os.getloadavg()[0], 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    locals_ = [r for r in rows if r["run"].startswith("local")]
    best = max(locals_, key=lambda r: r["steady_img_per_s"])
    for r in rows:
        if r["run"].startswith("Ray"):
            r["startup_overhead_s"] = round(ray_init + r["fixed_s"] - best["fixed_s"], 1)
            r["steady_vs_local"] = round(r["steady_img_per_s"] / best["steady_img_per_s"], 2)
    report = {"command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])), "data": args.data,
              "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
              "load_average_1min_before_after": load, "ray_init_s": round(ray_init, 2), "reference_local": best["run"],
              "runs": rows}
    print(f"\n| run | T({args.n_small}) s | T({args.n_large}) s | img/s at {args.n_large} | steady img/s | fixed s "
          "| Ray start-up overhead s | steady vs local |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['small']['total_s']} | {r['large']['total_s']} | {r['img_per_s_large']} | "
              f"{r['steady_img_per_s']} | {r['fixed_s']} | {r.get('startup_overhead_s', '-')} | {r.get('steady_vs_local', '-')} |")
    print(f"\nray.init (local Ray, {args.ray_cpus} CPUs): {ray_init:.2f} s. Overheads relative to {best['run']}. "
          f"1-min load average before / after: {load[0]} / {load[-1]} on {os.cpu_count()} cores.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
