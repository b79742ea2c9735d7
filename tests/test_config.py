"""scan and serve options from the environment (FAKESCOPE_<COMMAND>_<OPTION>) and a TOML config
file (--config / FAKESCOPE_CONFIG). Precedence: command line > environment > file > default."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
from adversarial.conftest import assert_one_line_error, png_bytes, run, save_tiny_detector  # noqa: E402


@pytest.fixture
def setup(tmp_path, monkeypatch):
    for k in ("FAKESCOPE_CONFIG", "FAKESCOPE_SCAN_THRESHOLD", "FAKESCOPE_SERVE_PORT", "FAKESCOPE_SCAN_MODEL"):
        monkeypatch.delenv(k, raising=False)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        (images / f"im{i}.png").write_bytes(png_bytes(i))
    model = save_tiny_detector(tmp_path / "model")
    config = tmp_path / "fakescope.toml"
    config.write_text(f"[scan]\nmodel = \"{model}\"\nthreshold = 0.0\n"
                      + '\n[serve]\nport = 9123\nmax-batch-size = 4\n')
    return tmp_path, images, config


def thresholds(tmp_path, images, *args) -> set:
    """The thresholds recorded by one scan; args[0] is a root option (before `scan`), the rest scan's."""
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.jsonl"
    res = run(*args[:1], "scan", images, "--out", out, "--no-table", *args[1:])
    assert res.exit_code == 0, res.stderr
    return {json.loads(x)["threshold"] for x in out.read_text().splitlines()}


def test_scan_precedence_cli_env_file_default(setup, monkeypatch):
    tmp, images, config = setup
    model = str(tmp / "model")
    assert thresholds(tmp, images, "-q", "--model", model) == {0.5}                   # the model's own
    assert thresholds(tmp, images, f"--config={config}") == {0.0}                      # file (model from it too)
    monkeypatch.setenv("FAKESCOPE_SCAN_THRESHOLD", "1.0")
    assert thresholds(tmp, images, f"--config={config}") == {1.0}                      # env beats file
    assert thresholds(tmp, images, f"--config={config}", "--threshold", "0.25") == {0.25}  # CLI beats env
    monkeypatch.delenv("FAKESCOPE_SCAN_THRESHOLD")
    monkeypatch.setenv("FAKESCOPE_CONFIG", str(config))
    assert thresholds(tmp, images, "-q") == {0.0}                                      # the file named by env


def test_serve_reads_env_and_file(setup, monkeypatch):
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import uvicorn
    tmp, _, config = setup
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    res = run(f"--config={config}", "serve", "--localizer", "none")
    assert res.exit_code == 0, res.stderr
    assert seen["port"] == 9123
    assert seen["app"].state.service.config.max_batch_size == 4
    monkeypatch.setenv("FAKESCOPE_SERVE_PORT", "9200")
    assert run(f"--config={config}", "serve", "--localizer", "none").exit_code == 0 and seen["port"] == 9200
    assert run(f"--config={config}", "serve", "--localizer", "none", "--port", "9300").exit_code == 0
    assert seen["port"] == 9300


def test_config_mistakes_are_usage_errors(setup):
    tmp, images, _ = setup
    bad = tmp / "bad.toml"
    bad.write_text("[scan]\nthreshhold = 0.3\n")
    assert_one_line_error(run(f"--config={bad}", "scan", images), "threshhold")
    bad.write_text("[train]\nmethod = 'linear'\n")
    assert_one_line_error(run(f"--config={bad}", "scan", images), "[train]")
    bad.write_text("[scan\n")
    assert_one_line_error(run(f"--config={bad}", "scan", images), "toml")
    assert_one_line_error(run(f"--config={tmp / 'missing.toml'}", "scan", images), "missing.toml")


def test_serve_flags_reach_the_service_config(setup, monkeypatch):
    """The provenance, video and decoded-pixel settings of the service are serve options too."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import uvicorn
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    res = run("serve", "--localizer", "none", "--provenance", "report", "--max-video-seconds", "30",
              "--video-frames", "4", "--max-pixels-in-flight", "20000000")
    assert res.exit_code == 0, res.stderr
    cfg = seen["app"].state.service.config
    assert (cfg.provenance, cfg.max_video_seconds, cfg.video_frames, cfg.max_pixels_in_flight) == \
        ("report", 30.0, 4, 20_000_000)
    assert run("serve", "--localizer", "none", "--provenance", "sometimes").exit_code == 2
