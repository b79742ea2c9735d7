"""Local manipulations: masks, edit mechanisms, the tiny autoencoder, pairs and dataset generation."""
from __future__ import annotations

import csv
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from fakescope.data import manipulate as M
from fakescope.data.sources import load_labelled

TINY_AE = {"channels": (8, 8, 8), "latent_channels": 4}
FEATHER = 1.5
BAND = int(np.ceil(3 * FEATHER)) + 2  # pixels around the mask a feathered blend may touch


def photo(h=64, w=80, seed=0, grain=12.0) -> np.ndarray:
    """A textured stand-in for a photo: smooth colour fields, a hard edge and pixel noise."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    a = np.asarray(low).astype(np.float32)
    a[:, w // 3:w // 3 + 3] = 20
    a += rng.normal(0, grain, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def grow(mask: np.ndarray, r: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * r + 1))) > 0


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny convs on a shared 2-core box: extra OpenMP threads only spin (15 s vs 0.5 s here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_ae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return M.TinyAutoencoder(**TINY_AE).eval()


# ---------------------------------------------------------------- masks
@pytest.mark.parametrize("kind", M.MASK_KINDS)
def test_mask_kinds_in_area_range(kind):
    for seed in range(8):
        for h, w in ((40, 40), (64, 96), (150, 100)):
            m = M.mask_shape(kind, h, w, np.random.default_rng(seed), area=(0.02, 0.35))
            assert m.shape == (h, w) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
            assert m.any() and 0.02 <= m.mean() <= 0.35, (kind, seed, h, w, m.mean())
    m = M.random_mask(50, 60, np.random.default_rng(1), kinds=(kind,), area=(0.1, 0.2))
    assert 0.1 <= m.mean() <= 0.2


def test_random_mask_is_seeded():
    a = M.random_mask(64, 64, np.random.default_rng(5))
    b = M.random_mask(64, 64, np.random.default_rng(5))
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- mechanisms
@pytest.mark.parametrize("mechanism", M.MECHANISM_NAMES)
def test_mechanism_edits_inside_mask_only(mechanism, tiny_ae):
    img = photo()
    mask = M.mask_shape("blob", 64, 80, np.random.default_rng(2), area=(0.15, 0.25))
    kw = {"feather_radius": FEATHER}
    if mechanism == "resynthesize":
        kw["autoencoder"] = tiny_ae
    if mechanism == "splice":
        kw["donor"] = photo(50, 70, seed=9)
    out = M.MECHANISMS[mechanism](img, mask, np.random.default_rng(0), **kw)
    assert out.shape == img.shape and out.dtype == np.uint8
    changed = (out != img).any(axis=2)
    final = M.edited_mask(mask, FEATHER).astype(bool)
    assert changed[final].mean() > 0.7, mechanism                  # the region is edited ...
    assert not changed[~grow(final, BAND)].any(), mechanism       # ... nothing beyond the feather band


def test_resynthesize_without_model_raises():
    img = photo()
    with pytest.raises(ValueError, match="TinyAutoencoder"):
        M.resynthesize(img, np.ones(img.shape[:2], np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="donor"):
        M.splice(img, np.ones(img.shape[:2], np.uint8), np.random.default_rng(0))


# ---------------------------------------------------------------- pairs
@pytest.mark.parametrize("mechanism", M.MECHANISM_NAMES)
def test_make_pair_mask_and_determinism(mechanism, tiny_ae):
    img = photo(seed=3)
    cfg = M.ManipulationConfig(p_jpeg=0.0, feather=(FEATHER, FEATHER))
    runs = [M.make_pair(img, np.random.default_rng(7), cfg, autoencoder=tiny_ae, donors=[photo(seed=4)],
                        mechanism=mechanism) for _ in range(2)]
    (fake, mask, info), (fake2, mask2, info2) = runs
    assert np.array_equal(fake, fake2) and np.array_equal(mask, mask2) and info == info2
    assert mask.shape == img.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert info["mechanism"] == mechanism and info["mask_kind"] in M.MASK_KINDS
    assert info["area"] == pytest.approx(mask.mean()) and mask.any()
    changed = (fake != img).any(axis=2)
    assert not changed[~grow(mask, BAND)].any()
    assert changed[mask > 0].mean() > 0.5


def test_make_pair_random_mechanism_and_final_jpeg():
    img = photo(seed=5)
    cfg = M.ManipulationConfig(jpeg_quality=(80, 80))
    seen = set()
    for seed in range(6):  # no autoencoder, no donors: resynthesize and splice are left out
        fake, mask, info = M.make_pair(img, np.random.default_rng(seed), cfg)
        seen.add(info["mechanism"])
        assert info["jpeg"] == 80 and fake.shape == img.shape
        assert (fake != img).any(axis=2)[mask == 0].mean() > 0.3  # the whole image was re-encoded
    assert seen and not seen & {"resynthesize", "splice"}


def test_make_real_zero_mask_same_reencoding():
    img = photo(seed=6)
    real, mask = M.make_real(img, np.random.default_rng(0), M.ManipulationConfig(p_jpeg=0.0))
    assert np.array_equal(real, img) and mask.shape == img.shape[:2] and not mask.any()
    real, mask = M.make_real(img, np.random.default_rng(0), M.ManipulationConfig(jpeg_quality=(75, 75)))
    assert not mask.any() and not np.array_equal(real, img)
    from fakescope.imageops import jpeg_roundtrip
    assert np.array_equal(real, np.asarray(jpeg_roundtrip(Image.fromarray(img), 75)))


def test_config_validation():
    with pytest.raises(ValueError):
        M.ManipulationConfig(mechanisms={"paint": 1.0})
    with pytest.raises(ValueError):
        M.ManipulationConfig(area=(0.5, 0.2))
    assert M.ManipulationConfig().signature() == M.ManipulationConfig().signature()


# ---------------------------------------------------------------- autoencoder
def test_autoencoder_trains_and_round_trips(tmp_path, monkeypatch):
    imgs = [photo(40, 40, seed=s, grain=0) for s in range(3)]
    history: list[float] = []
    model = M.train_autoencoder(imgs, steps=60, batch_size=4, crop=32, lr=1e-2, seed=0, history=history,
                                channels=(8, 16, 16), latent_channels=4)
    assert len(history) == 60
    assert np.mean(history[-10:]) < 0.9 * np.mean(history[:10])

    d = M.save_autoencoder(model, tmp_path / "ae")
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors"]

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")
    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = M.load_autoencoder(d)
    img = photo(seed=8)
    assert np.array_equal(model.reconstruct(img), loaded.reconstruct(img))
    mask = M.random_mask(64, 80, np.random.default_rng(0))
    a = M.resynthesize(img, mask, np.random.default_rng(1), model, latent_noise=0.2)
    b = M.resynthesize(img, mask, np.random.default_rng(1), loaded, latent_noise=0.2)
    assert np.array_equal(a, b)
    with pytest.raises(FileNotFoundError):
        M.load_autoencoder(tmp_path / "missing")
    assert M.default_autoencoder_dir().parts[-3:] == ("fakescope", "models", "autoencoder")


# ---------------------------------------------------------------- datasets
def _inputs(root):
    (root / "real").mkdir(parents=True)
    Image.fromarray(photo(48, 64, seed=1)).save(root / "real" / "a.png")
    Image.fromarray(photo(56, 40, seed=2)).save(root / "real" / "b.jpg", quality=90)
    (root / "real" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return list(load_labelled(root))


def _snapshot(d):
    return {p.relative_to(d).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_generate_dataset_resumes_and_reports(tmp_path, tiny_ae):
    samples = _inputs(tmp_path / "in")
    cfg = M.ManipulationConfig(feather=(1.0, 2.0))
    logged: list[str] = []
    out = tmp_path / "out"
    rep = M.generate_dataset(samples, out, n_per_image=2, config=cfg, seed=3, autoencoder=tiny_ae,
                             real_fraction=0.5, log=logged.append)
    assert rep.fakes_written == 4 and rep.reals_written == 2 and rep.skipped == 0
    assert [p.endswith("c.png") for p, _ in rep.errors] == [True]
    assert any("c.png" in line for line in logged)

    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["real", "fake", "mask", "prompt", "mechanism", "mask_kind", "area"]
    assert [r["fake"] for r in rows] == ["fake/a_0.png", "fake/a_1.png", "fake/b_0.png", "fake/b_1.png"]
    for r in rows:
        assert r["real"] in ("real/a.png", "real/b.png") and r["prompt"] == ""
        fake = np.asarray(Image.open(out / r["fake"]))
        mask = np.asarray(Image.open(out / r["mask"]))
        real = np.asarray(Image.open(out / r["real"]))
        assert fake.shape == real.shape and mask.shape == fake.shape[:2]
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert float(r["area"]) == pytest.approx((mask > 0).mean(), abs=1e-4)
        assert r["mechanism"] in M.MECHANISM_NAMES and r["mask_kind"] in M.MASK_KINDS

    before = _snapshot(out)
    rep2 = M.generate_dataset(samples, out, n_per_image=2, config=cfg, seed=3, autoencoder=tiny_ae,
                              real_fraction=0.5, log=logged.append)
    assert rep2.fakes_written == 0 and rep2.reals_written == 0 and rep2.skipped == 6
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k != "table.csv"} == {k: v for k, v in before.items() if k != "table.csv"}
    assert after["table.csv"][1] == before["table.csv"][1]

    # a lost output is regenerated, identically (every output has its own seed)
    (out / "fake" / "b_1.png").unlink()
    rep3 = M.generate_dataset(samples, out, n_per_image=2, config=cfg, seed=3, autoencoder=tiny_ae,
                              real_fraction=0.5, log=logged.append)
    assert rep3.fakes_written == 1
    assert (out / "fake" / "b_1.png").read_bytes() == before["fake/b_1.png"][1]

    # same seed elsewhere -> the same files
    rep4 = M.generate_dataset(samples, tmp_path / "again", n_per_image=2, config=cfg, seed=3,
                              autoencoder=tiny_ae, real_fraction=0.5, log=logged.append)
    assert rep4.fakes_written == 4
    again = _snapshot(tmp_path / "again")
    assert {k: v[1] for k, v in again.items()} == {k: v[1] for k, v in before.items()}
