"""Robustness grid (perturbations, perturbed samples, per-perturbation metrics) and the format guard."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from fakescope.data.samples import FAKE, REAL, Sample
from fakescope.evaluation.format_guard import (FormatShortcutWarning, check_formats, estimate_jpeg_quality,
                                               format_report, ijg_table, warn_if_format_shortcut)
from fakescope.evaluation.robustness import (DEFAULT_GRID, Perturbation, apply, perturbed_samples,
                                             robustness_grid)
from fakescope.images import decode_image

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8)


def textured(seed=0, h=40, w=48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def grid_named(name: str) -> Perturbation:
    return next(p for p in DEFAULT_GRID if p.name == name)


def high_freq_energy(img: Image.Image) -> float:
    a = np.asarray(img.convert("L"), dtype=np.float64)
    return float((np.diff(a, axis=0) ** 2).mean() + (np.diff(a, axis=1) ** 2).mean())


# ---------------------------------------------------------------- perturbations
def test_default_grid_contents():
    names = [p.name for p in DEFAULT_GRID]
    assert len(names) == len(set(names)) == 14
    kinds = {k: sorted(p.value for p in DEFAULT_GRID if p.kind == k) for k in ("jpeg", "blur", "resize", "crop", "noise")}
    assert kinds == {"jpeg": [50, 75, 90, 95], "blur": [1, 2, 3], "resize": [0.5, 0.75, 1.5], "crop": [0.5],
                     "noise": [5, 10]}
    assert grid_named("clean").value is None
    with pytest.raises(ValueError):
        Perturbation("x", "rotate", 1.0)


def test_clean_resize_and_crop_sizes():
    img = textured()
    assert np.array_equal(np.asarray(apply(img, grid_named("clean"))), np.asarray(img))
    assert apply(img, grid_named("resize-0.5")).size == (24, 20)
    assert apply(img, grid_named("resize-1.5")).size == (72, 60)
    assert apply(img, grid_named("resize-0.75")).size == (36, 30)
    crop = apply(img, grid_named("crop-0.5"))
    w, h = crop.size
    assert abs(w * h / (48 * 40) - 0.5) < 0.03
    # centred: the crop is the middle of the original
    left, top = (48 - w) // 2, (40 - h) // 2
    assert np.array_equal(np.asarray(crop), np.asarray(img)[top:top + h, left:left + w])


def test_blur_removes_high_frequencies():
    img = textured()
    energies = [high_freq_energy(apply(img, grid_named(f"blur-{s}"))) for s in (1, 2, 3)]
    assert energies[0] < 0.3 * high_freq_energy(img)
    assert energies[0] > energies[1] > energies[2]


def test_noise_is_seeded():
    img = Image.new("RGB", (32, 32), (128, 100, 60))
    p = grid_named("noise-10")
    a, b, c = (np.asarray(apply(img, p, seed=s)).astype(int) for s in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    diff = a - np.asarray(img).astype(int)
    assert 8 < diff.std() < 12 and abs(diff.mean()) < 1.5
    diff5 = np.asarray(apply(img, grid_named("noise-5"), seed=3)).astype(int) - np.asarray(img).astype(int)
    assert 4 < diff5.std() < 6


@pytest.mark.parametrize("quality", [50, 90])
def test_jpeg_perturbation_quality(quality):
    img = textured()
    out = perturbed_samples([Sample(path="x.png", data=encoded(img, "PNG"), label=REAL)],
                            grid_named(f"jpeg-{quality}"))[0]
    with Image.open(io.BytesIO(out.data)) as j:
        assert j.format == "JPEG"
        assert abs(estimate_jpeg_quality(j.quantization[0]) - quality) <= 5
    assert not np.array_equal(np.asarray(apply(img, grid_named(f"jpeg-{quality}"))), np.asarray(img))


def test_quality_estimate_is_exact_for_ijg_tables():
    for q in (10, 35, 50, 75, 95, 100):
        assert estimate_jpeg_quality(ijg_table(q)) == q


def test_perturbed_samples_keep_labels_and_count(tmp_path):
    f = tmp_path / "f.png"
    textured(2).save(f)
    samples = [Sample(path="r.png", data=encoded(textured(1), "PNG"), label=REAL),
               Sample(path=str(f), label=FAKE, generator="genA", text="a cat"),
               Sample(path="broken.png", data=b"not an image", label=FAKE, generator="genB")]
    out = perturbed_samples(samples, grid_named("blur-2"))
    assert len(out) == 3
    assert [(s.label, s.generator, s.text) for s in out] == [(s.label, s.generator, s.text) for s in samples]
    assert out[0].path == "r.png#blur-2" and out[1].path == f"{f}#blur-2"
    assert decode_image(out[1].data).size == (48, 40) and out[1].data.startswith(b"\x89PNG")
    assert out[2] is samples[2]  # unreadable: kept so the detector reports the error
    # deterministic, and each image gets its own noise
    n1 = perturbed_samples(samples[:2], grid_named("noise-5"), seed=1)
    n2 = perturbed_samples(samples[:2], grid_named("noise-5"), seed=1)
    assert [s.data for s in n1] == [s.data for s in n2]


# ---------------------------------------------------------------- grid on a tiny detector
@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    from fakescope.backbones import parse_spec
    from fakescope.detector import Detector
    from fakescope.heads.linear import LinearProbe

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("FAKESCOPE_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("dino")
    tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval().save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    spec = parse_spec(f"hf-dinov2:{d}")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, spec.dim)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(40) > 0).astype(int)
    head = LinearProbe(seed=0)
    head.fit(X, y)
    yield Detector(spec=spec, head=head, threshold=0.5, id="tiny", version="1")
    torch.set_num_threads(threads)
    mp.undo()


def test_robustness_grid_rows(tiny_detector):
    rng = np.random.default_rng(5)
    samples = []
    for i in range(4):
        smooth = np.sort(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), axis=1)
        samples.append(Sample(path=f"real/{i}.png", data=encoded(Image.fromarray(smooth), "PNG"), label=REAL))
        samples.append(Sample(path=f"fake/{i}.png", data=encoded(textured(10 + i, 40, 40), "PNG"),
                              label=FAKE, generator="genA" if i % 2 else "genB"))
    grid = [grid_named(n) for n in ("clean", "jpeg-50", "blur-2", "resize-0.5", "crop-0.5", "noise-10")]
    logged = []
    rows = robustness_grid(tiny_detector, samples, grid=grid, log=logged.append)
    assert [r["perturbation"] for r in rows] == [p.name for p in grid] and len(logged) == len(grid)
    for r in rows:
        assert set(r) >= {"perturbation", "kind", "value", "n", "auc", "ap", "accuracy", "acc_real", "acc_fake"}
        assert r["n"] == 8 and r["errors"] == 0
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert set(r["auc_by_generator"]) == {"genA", "genB"}
    # per generator: the AUC of all reals against that generator's fakes, under the same perturbation
    from fakescope.evaluation.metrics import roc_auc
    from fakescope.evaluation.robustness import perturbed_samples
    jpeg = perturbed_samples(samples, grid[1])
    res = tiny_detector.predict([s.data for s in jpeg])
    for g in ("genA", "genB"):
        keep = [i for i, s in enumerate(jpeg) if s.label == REAL or s.generator == g]
        want = roc_auc(np.array([jpeg[i].label for i in keep]), np.array([res[i].score for i in keep]))
        assert rows[1]["auc_by_generator"][g] == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------- format guard
def _set(real_fmt, fake_fmt, real_size=(48, 40), fake_size=(48, 40), n=4, **kw):
    out = []
    for i in range(n):
        out.append(Sample(path=f"r{i}", data=encoded(textured(i, real_size[1], real_size[0]), real_fmt,
                                                     **kw.get("real_kw", {})), label=REAL))
        out.append(Sample(path=f"f{i}", data=encoded(textured(50 + i, fake_size[1], fake_size[0]), fake_fmt,
                                                     **kw.get("fake_kw", {})), label=FAKE))
    return out


def test_format_report():
    r = format_report(_set("PNG", "JPEG", fake_kw={"quality": 90}) + [Sample(path="x", data=b"junk", label=REAL)])
    assert r["real"]["formats"] == {"PNG": 4} and r["real"]["unreadable"] == 1 and r["real"]["n"] == 5
    assert r["fake"]["dominant_format"] == "JPEG" and r["fake"]["jpeg_quality_median"] == 90
    assert r["real"]["jpeg_quality_median"] is None
    assert (r["real"]["median_width"], r["real"]["median_height"]) == (48, 40)


def test_guard_warns_on_png_reals_and_jpeg_fakes():
    with pytest.warns(FormatShortcutWarning, match="PNG"):
        found = warn_if_format_shortcut(_set("PNG", "JPEG"))
    assert len(found) == 1


def test_guard_warns_on_sizes_and_quality():
    found = check_formats(_set("PNG", "PNG", real_size=(96, 80)))
    assert len(found) == 2 and all("median" in m for m in found)
    found = check_formats(_set("JPEG", "JPEG", real_kw={"quality": 95}, fake_kw={"quality": 60}))
    assert len(found) == 1 and "quality" in found[0]


def test_guard_silent_when_alike():
    alike = _set("JPEG", "JPEG", real_size=(48, 40), fake_size=(56, 44),
                 real_kw={"quality": 85}, fake_kw={"quality": 90})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_format_shortcut(alike) == []
    assert check_formats([s for s in alike if s.label == REAL]) == []  # one class only: nothing to compare
