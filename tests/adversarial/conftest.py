"""Shared pieces of the adversarial suite: a tiny detector on the `pixels` backbone (no weights
to download, scores in microseconds), images, and the CLI runner."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")  # the linear head is torch code


def png_bytes(seed: int = 0, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_tiny_detector(folder: Path, weight: float = 0.01, **meta_changes) -> Path:
    """A linear head on 8x8 pixels (192 values), written through Detector.save, then edited."""
    from dataclasses import replace

    from fakescope.backbones.trained import pixels_spec
    from fakescope.detector import Detector
    from fakescope.heads.linear import LinearProbe

    head = LinearProbe.from_state({"l2": 1.0}, {"mean": np.zeros(192, np.float32), "std": np.ones(192, np.float32),
                                                "weight": np.full(192, weight, np.float32),
                                                "bias": np.zeros(1, np.float32)})
    spec = replace(pixels_spec(), input_size=8, name="pixels?size=8", dim=192)
    Detector(spec=spec, head=head, threshold=0.5, id="tiny", version="1").save(folder)
    if meta_changes:
        edit_json(folder / "detector.json", **meta_changes)
    return folder


def edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        target = meta
        *parents, last = key.split("__")
        for k in parents:
            target = target[k]
        target[last] = value
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_detector(tmp_path_factory.mktemp("adv") / "model")


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"im{i}.png").write_bytes(png_bytes(i))
    return d


def run(*args, input=None):
    """The CLI in this process; stderr kept apart so a test can say it is exactly one line."""
    from fakescope.cli import app
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps them apart
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_one_line_error(result, *words: str) -> None:
    """Exit 2, no traceback, one line on stderr that says what is wrong."""
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, stderr, result.exception)
    assert "Traceback" not in stderr + result.output
    assert len([line for line in stderr.splitlines() if line.strip()]) == 1, stderr
    for w in words:
        assert w.lower() in stderr.lower(), stderr
