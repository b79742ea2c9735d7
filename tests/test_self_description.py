"""The `fsd` backbone (backbones/residuals.py): a per-image pixel predictor, checked against what
it must find on images whose structure is known, and a real-only detector on it through the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.backbones import load_backbone, parse_spec
from fakescope.backbones.residuals import DIM, OFFSETS, PERIODS, describe
from fakescope.cli import app
from fakescope.detector import load_detector

N_W = len(OFFSETS)
RATIO = N_W + 1           # index of log(residual variance / plain-average residual variance), scale 1
PHASES = N_W + 3          # first of the per-period phase spreads, scale 1


def _image(gray: np.ndarray) -> np.ndarray:
    """(3, H, W) in 0..1 with the same values in every channel (luma = the values)."""
    return np.repeat(np.clip(gray, 0, 1)[None], 3, axis=0).astype(np.float32)


def test_white_noise_is_unpredictable_and_has_no_grid():
    """Independent pixels: the fitted weights are ~0, so the residual is the pixel itself, and a
    plain 8-neighbour average adds 1/8 of the variance: the ratio is log(8/9)."""
    d = describe(_image(np.random.default_rng(0).uniform(0.2, 0.8, (256, 256))))
    assert d.shape == (DIM,) and np.isfinite(d).all()
    assert np.abs(d[:N_W]).max() < 0.03
    assert d[RATIO] == pytest.approx(np.log(8 / 9), abs=0.02)
    assert max(d[PHASES:PHASES + len(PERIODS)]) < 0.05
    flat = describe(_image(np.full((64, 64), 0.5)))  # no structure at all: described, not a crash
    assert np.isfinite(flat).all() and not flat[:N_W].any()


def test_linear_upsampling_leaves_a_two_pixel_grid_and_predictable_pixels():
    """2x linear interpolation (Popescu and Farid's resampling trace): the pixels between the
    original samples are exact averages of their neighbours, the originals are not, so the
    residual energy sits on one phase of the 2 px grid and the predictor beats a plain average."""
    rng = np.random.default_rng(1)
    src = rng.uniform(0.2, 0.8, (129, 129))
    up = np.zeros((257, 257))
    up[::2, ::2] = src
    up[1::2, ::2] = (src[:-1] + src[1:]) / 2
    up[:, 1::2] = (up[:, :-1:2] + up[:, 2::2]) / 2
    d_up, d_plain = describe(_image(up[:256, :256])), describe(_image(rng.uniform(0.2, 0.8, (256, 256))))
    p2 = PHASES + PERIODS.index(2)
    assert d_up[p2] > 0.3 > d_plain[p2]
    assert d_up[RATIO] < d_plain[RATIO] - 0.3


def test_registry_spec_and_batch():
    spec = parse_spec("fsd?size=64")
    assert spec.kind == "fsd" and spec.input_size == 64 and spec.resize == "native_crop" and spec.dim == DIM
    batch = np.stack([_image(np.random.default_rng(k).uniform(0, 1, (64, 64))) for k in range(3)])
    out = load_backbone(spec).forward(batch).pooled
    assert out.shape == (3, DIM) and np.allclose(out[1], describe(batch[1]), atol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        load_backbone(parse_spec("fsd?layers=2"))
    from dataclasses import replace
    with pytest.raises(ValueError, match="description"):  # a folder from another version of the description
        load_backbone(replace(spec, weights="fsd-0"))


def test_a_real_only_detector_on_it_trains_saves_and_separates_upsampled_images(tmp_path):
    """Fitted on real images only (`distance`): 2x up-sampled noise sits far from plain noise."""
    rng = np.random.default_rng(2)
    for label, n in (("real", 24), ("fake", 24)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(n):
            px = rng.integers(40, 216, (48, 48, 3) if label == "fake" else (96, 96, 3)).astype(np.uint8)
            if label == "fake":
                px = px.repeat(2, 0).repeat(2, 1)
            Image.fromarray(px).save(tmp_path / "data" / label / f"{i}.png")
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "data"), "--backbone", "fsd?size=64",
                                   "--method", "distance", "--no-cache", "--val-fraction", "0.3", "--no-uncertain",
                                   "--out", str(tmp_path / "det")])
    assert res.exit_code == 0, res.output
    det = load_detector(tmp_path / "det")
    assert det.spec.kind == "fsd" and det.metadata["validation_metrics"]["auc"] > 0.95
