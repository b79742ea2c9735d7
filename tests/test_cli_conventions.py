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


# --- scan --threshold, --out -, --quiet / --verbose, choices, completion ---------------------------
import json  # noqa: E402
import logging  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("torch")
from adversarial.conftest import png_bytes, run, save_tiny_detector  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        (images / f"im{i}.png").write_bytes(png_bytes(i))
    return save_tiny_detector(tmp_path / "model"), images


def test_threshold_overrides_the_model_for_one_run(tiny, tmp_path):
    model, images = tiny
    scores = {}
    for t in (0.0, 1.0):
        out = tmp_path / f"t{t}.jsonl"
        res = run("scan", images, "--model", model, "--threshold", t, "--out", out)
        assert res.exit_code == 0, res.stderr
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(lines) == 4 and {r["threshold"] for r in lines} == {t}
        assert {r["label"] for r in lines} == ({"fake"} if t == 0.0 else {"real"})
        assert f"threshold {t:.3f}" in res.stdout  # the table's title
        scores[t] = [r["score"] for r in lines]
    assert scores[0.0] == scores[1.0]  # only the verdict moves
    assert run("scan", images, "--model", model, "--threshold", 1.5).exit_code == 2


def test_out_dash_writes_only_json_lines_on_stdout(tiny):
    model, images = tiny
    res = run("scan", images, "--model", model, "--out", "-")
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 4 and all(r["model"] == "tiny" for r in lines)
    assert "P(fake)" in res.stderr and "4 scored" in res.stderr  # the table and summary moved to stderr
    assert run("scan", images, "--model", model, "--out", "-", "--format", "parquet").exit_code == 2


def test_quiet_and_verbose_set_the_log_level(tiny):
    from fakescope.progress import progress
    model, images = tiny
    normal = run("scan", images, "--model", model, "--no-table")
    assert "4 scored, 0 failed" in normal.stderr and "detector tiny" not in normal.stderr
    quiet = run("-q", "scan", images, "--model", model, "--no-table")
    assert quiet.exit_code == 0 and quiet.stderr.strip() == ""
    assert logging.getLogger("fakescope").level == logging.WARNING
    assert progress(total=1000, desc="x").disable  # no progress bars under --quiet
    verbose = run("--verbose", "scan", images, "--model", model, "--no-table")
    assert "detector tiny" in verbose.stderr and "4 scored" in verbose.stderr
    # errors still show under --quiet
    missing = run("-q", "scan", images, "--model", images / "nothing")
    assert missing.exit_code == 2 and "nothing" in missing.stderr


@pytest.mark.parametrize("args, listed", [
    (["scan", "--engine", "gpu"], "local|ray"),
    (["scan", "--format", "csv"], "auto|jsonl|parquet"),
    (["features", "--engine", "gpu", "--out", "x"], "local|ray"),
    (["calibrate", "--method", "isotonic", "--data", "x", "--out", "y"], "platt|temperature|none"),
    (["train", "--method", "svm", "--data", "x", "--out", "y"], "linear|"),
    (["train", "--modality", "audio", "--data", "x", "--out", "y"], "image|text|both"),
    (["build", "fakes", "--format", "gif", "--captions", "c", "-g", "g", "--out", "o"], "png|jpeg|jpg|webp"),
])
def test_choices_are_listed_and_checked(args, listed):
    cmd = [a for a in args[:2] if not a.startswith("-")]
    bad = run(*args, "img.png") if args[0] in ("scan", "features") else run(*args)
    assert bad.exit_code == 2 and "Invalid value" in bad.stderr + bad.output
    help_text = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "250"}).output
    assert listed in help_text.replace(" ", "")


def test_method_choices_match_the_registries():
    from fakescope.cli import Method
    from fakescope.heads import methods
    from fakescope.training.fit import fit_detector  # noqa: F401 (imports the recipes: they register)
    from fakescope.training.methods import recipe_methods
    # a new head or recipe: add its name to cli.Method; nothing there that neither registry knows
    assert {m.value for m in Method} == set(methods()) | set(recipe_methods())


def test_shell_completion_is_offered():
    out = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert "--install-completion" in out and "--show-completion" in out
