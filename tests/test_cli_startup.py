"""`fakescope --help` stays fast: importing the CLI and rendering every command's help load no
heavy library. Timings are in benchmarks/cli_startup.py; this checks what is imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "numpy", "PIL", "onnxruntime", "transformers", "ray", "fastapi", "sklearn", "pyarrow",
         "safetensors", "diffusers", "datasets", "uvicorn", "tqdm")

# In a fresh interpreter: import the CLI, render the help of every command and sub-command.
PROBE = """
import contextlib, io, json, sys
import typer.main
import fakescope.cli
after_import = sorted(m for m in HEAVY if m in sys.modules)
paths = []
def walk(group, prefix):
    for name, cmd in getattr(group, "commands", {}).items():
        paths.append(prefix + [name])
        walk(cmd, prefix + [name])
walk(typer.main.get_command(fakescope.cli.app), [])
for argv in [[]] + paths:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            fakescope.cli.app(argv + ["--help"])
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
print(json.dumps({"after_import": after_import, "after_help": sorted(m for m in HEAVY if m in sys.modules),
                  "commands": [" ".join(p) for p in paths]}))
"""


def _probe() -> dict:
    env = {**os.environ, "FAKESCOPE_NO_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_import_and_every_help_load_no_heavy_library():
    got = _probe()
    assert {"scan", "train", "eval", "serve", "features", "localizer train", "build fakes"} <= set(got["commands"])
    assert got["after_import"] == []
    assert got["after_help"] == []

