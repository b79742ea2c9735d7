"""How long `fakescope --help` takes, and what importing the CLI loads.

Printed: the wall time of `fakescope --help` and of every `fakescope <command> --help`
(best of --repeat runs, each a fresh process), the time to `import fakescope.cli`
(best of --repeat, from `python -X importtime`), the modules that import took longest on,
and whether any heavy library (torch, numpy, PIL, ...) was loaded. A --help should not load a
deep-learning framework: heavy imports belong inside the command bodies.

    python benchmarks/cli_startup.py               # figures for this machine
    python benchmarks/cli_startup.py --repeat 10 --top 20
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "numpy", "PIL", "onnxruntime", "transformers", "ray", "fastapi", "sklearn", "pyarrow",
         "safetensors", "diffusers", "datasets")


def commands() -> list[list[str]]:
    """Every command and sub-command path, from the Typer app itself."""
    import typer.main

    from fakescope.cli import app
    out: list[list[str]] = [[]]

    def walk(group, prefix):
        for name, cmd in getattr(group, "commands", {}).items():
            out.append(prefix + [name])
            walk(cmd, prefix + [name])

    walk(typer.main.get_command(app), [])
    return out


def best_wall(argv: list[str], repeat: int, env: dict) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def import_profile(repeat: int, env: dict) -> tuple[float, list[tuple[int, str]], list[str]]:
    """Best cumulative import time of fakescope.cli (s), its slowest modules in that run, heavy modules loaded."""
    code = f"import fakescope.cli, sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    best, rows, heavy = float("inf"), [], []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                           text=True, check=True)
        parsed = []
        for line in p.stderr.splitlines():
            if line.startswith("import time:") and "|" in line:
                _, cum, name = line[len("import time:"):].split("|")
                if cum.strip().isdigit():
                    parsed.append((int(cum), name.rstrip()))
        total = next(us for us, name in parsed if name.strip() == "fakescope.cli") / 1e6
        if total < best:
            best, rows, heavy = total, parsed, [m for m in p.stdout.strip().split(",") if m]
    return best, sorted(rows, reverse=True), heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--top", type=int, default=12, help="Slowest imports to list.")
    args = ap.parse_args()
    env = {**os.environ, "FAKESCOPE_NO_PROGRESS": "1"}
    exe = shutil.which("fakescope", path=str(Path(sys.executable).parent)) or "fakescope"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; best of {args.repeat}")
    base = best_wall([sys.executable, "-c", "pass"], args.repeat, env)
    print(f"{'python -c pass':40s} {base:6.3f} s")
    total, rows, heavy = import_profile(args.repeat, env)
    print(f"{'import fakescope.cli':40s} {total:6.3f} s   heavy modules loaded: {', '.join(heavy) or 'none'}")
    for argv in commands():
        label = " ".join(["fakescope", *argv, "--help"])
        print(f"{label:40s} {best_wall([exe, *argv, '--help'], args.repeat, env):6.3f} s")
    print(f"\nslowest imports under fakescope.cli (cumulative, one run):")
    for us, name in rows[:args.top]:
        print(f"  {us / 1e3:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
