"""Load test of `fakescope serve` on loopback: requests/s, latency percentiles, errors, memory.

For each configuration the server is started in a subprocess on 127.0.0.1 (or --url targets
one that runs already), warmed up, then --clients concurrent clients (asyncio + httpx, one
connection each) post the example images to /v1/detect back to back for --duration seconds.
Printed per configuration: requests/s, p50/p95/p99/max latency, errors (anything but 200,
or a failed connection: must be 0), the server's resident memory (VmRSS) before and after
the run and its peak (VmHWM), and the mean batch size the micro-batcher ran.

The configurations compare micro-batching on (a 5 ms window, up to 32 images per forward)
with off (--max-batch-size 1: one forward per request), by default without the localiser
(scores only; --localizer default adds the heatmaps, about 10x the work per image).
The clients run on the same machine as the server and take CPU from it: numbers are for
the pair, on whatever else the machine is doing (the load average is printed).

    python benchmarks/load.py --duration 30 --clients 8 --json runs/load.json
    python benchmarks/load.py --url http://127.0.0.1:8000/ --duration 10   # an existing server
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> extra `fakescope serve` options
    "batched": ["--batch-window-ms", "5", "--max-batch-size", "32"],
    "unbatched": ["--batch-window-ms", "0", "--max-batch-size", "1"],
}


def rss_kib(pid: int | None) -> dict[str, int | None]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB, from /proc (Linux)."""
    out: dict[str, int | None] = {"rss": None, "peak": None}
    if pid is None:
        return out
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0])
    except OSError:
        pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, seconds: float = 180) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {seconds:.0f} s")


def start_server(options: list[str], localizer: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "FAKESCOPE_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "fakescope.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--localizer", localizer, "--log-level", "warning", *options]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}/"


async def run_load(url: str, images: list[tuple[str, bytes]], clients: int, duration: float,
                   localize: bool, api_key: str | None, warmup: int = 10) -> dict:
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    endpoint = url + f"v1/detect?localize={'true' if localize else 'false'}"
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=60, headers=headers,
                                 limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients)) as http:
        async def post(i: int) -> None:
            name, data = images[i % len(images)]
            t = time.perf_counter()
            try:
                r = await http.post(endpoint, files={"file": (name, data, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    return
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                return
            latencies.append(time.perf_counter() - t)

        for i in range(warmup):  # first requests pay one-off costs (allocations, ONNX/torch warm-up paths)
            await post(i)
        latencies.clear()
        if errors:
            return {"errors": len(errors), "error_samples": errors[:5]}
        stop = time.perf_counter() + duration
        counter = iter(range(10**9))

        async def client() -> None:
            while time.perf_counter() < stop:
                await post(next(counter))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000.0
    pct = (lambda q: round(float(np.percentile(ms, q)), 1)) if len(ms) else (lambda q: None)
    return {"requests": len(latencies), "errors": len(errors), "error_samples": errors[:5], "seconds": round(wall, 2),
            "rps": round(len(latencies) / wall, 2), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "max_ms": round(float(ms.max()), 1) if len(ms) else None}


def batching_stats(url: str, api_key: str | None) -> dict:
    req = urllib.request.Request(url + "v1/models", headers={"X-API-Key": api_key} if api_key else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["batching"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per configuration")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--configs", default="batched,unbatched", help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--localizer", default="none", help="'none' (scores only), 'default', or a localiser folder")
    ap.add_argument("--images", type=Path, default=ROOT / "examples" / "cifake", help="folder of images to post")
    ap.add_argument("--url", help="target this running server instead of starting one per configuration")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for its memory")
    ap.add_argument("--api-key", default=os.environ.get("FAKESCOPE_API_KEY"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    images = [(p.name, p.read_bytes()) for p in files]
    if not images:
        ap.error(f"no images in {args.images}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"{len(images)} images from {args.images}; {args.clients} clients x {args.duration:g} s; "
          f"localizer {args.localizer}; {machine['cpus']} CPUs, load average {machine['load_average_at_start']}")
    configs = ["external"] if args.url else [c.strip() for c in args.configs.split(",") if c.strip()]
    rows = []
    for name in configs:
        proc = None
        if args.url:
            url, pid = args.url.rstrip("/") + "/", args.pid
        else:
            log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fakescope-load-{name}-{os.getpid()}.log"
            proc, url = start_server(CONFIGS[name], args.localizer, log)
            pid = proc.pid
        try:
            wait_ready(url, proc)
            before = rss_kib(pid)
            res = asyncio.run(run_load(url, images, args.clients, args.duration, args.localizer != "none", args.api_key))
            after = rss_kib(pid)
            res.update(config=name, options=CONFIGS.get(name, []), rss_before_mib=_mib(before["rss"]),
                       rss_after_mib=_mib(after["rss"]), rss_peak_mib=_mib(after["peak"]))
            res["batching"] = batching_stats(url, args.api_key)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        rows.append(res)
        b = res["batching"]
        print(f"{name:10s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']} ms  p95 {res['p95_ms']} ms  "
              f"p99 {res['p99_ms']} ms  max {res['max_ms']} ms  errors {res['errors']}  "
              f"RSS {res['rss_before_mib']} -> {res['rss_after_mib']} MiB (peak {res['rss_peak_mib']})  "
              f"mean batch {b['mean_batch_size']}")
        for e in res.get("error_samples") or []:
            print("   error:", e)
    by = {r["config"]: r for r in rows}
    if "batched" in by and "unbatched" in by and by["unbatched"]["rps"]:
        print(f"micro-batching: {by['batched']['rps'] / by['unbatched']['rps']:.2f}x the requests/s of one forward per request")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "clients": args.clients, "duration_s": args.duration,
                                         "localizer": args.localizer, "results": rows}, indent=2) + "\n")
    return 1 if any(r["errors"] for r in rows) else 0


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


if __name__ == "__main__":
    sys.exit(main())
