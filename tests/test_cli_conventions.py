"""Command-line conventions: --version, -h, python -m fakescope."""
from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from fakescope import __version__
from fakescope.cli import app


def test_version_and_short_help():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fakescope {__version__}"
    short, long = CliRunner().invoke(app, ["-h"]), CliRunner().invoke(app, ["--help"])
    assert short.exit_code == long.exit_code == 0 and short.output == long.output and "scan" in short.output
    assert CliRunner().invoke(app, ["scan", "-h"]).output == CliRunner().invoke(app, ["scan", "--help"]).output


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "fakescope", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"fakescope {__version__}"
    bad = subprocess.run([sys.executable, "-m", "fakescope", "no-such-command"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
