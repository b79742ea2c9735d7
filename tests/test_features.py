"""FeatureCache + extract with a counting stand-in backbone: caching, resume after a crash, views."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from fakescope.backbones import BackboneSpec, Features, preprocess
from fakescope.data.samples import Sample
from fakescope.features import FeatureCache, extract, sha_of, view_key
from fakescope.images import decode_image

SPEC = BackboneSpec(name="count-test", kind="count-test", weights="none", input_size=16, dim=3)
N_GOOD = 10


class Boom(RuntimeError):
    pass


class CountingBackbone:
    """Per-channel mean of the preprocessed image; counts images and calls, can fail on call `fail_on`."""

    def __init__(self, spec: BackboneSpec = SPEC, fail_on: int | None = None):
        self.spec = spec
        self.images = 0
        self.calls = 0
        self.fail_on = fail_on

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        self.calls += 1
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise Boom(f"forward call {self.calls}")
        assert batch.dtype == np.float32 and batch.shape[1:] == (3, self.spec.input_size, self.spec.input_size)
        self.images += len(batch)
        return Features(pooled=batch.mean(axis=(2, 3)))


@pytest.fixture
def images(tmp_path):
    """10 distinct PNG/JPEG images of assorted sizes, then one broken file (sorted last)."""
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_GOOD):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[..., i % 3] = np.linspace(0, 255, w, dtype=np.uint8)  # make every image clearly different
        ext = "png" if i % 2 else "jpg"
        p = d / f"img{i:02d}.{ext}"
        Image.fromarray(arr).save(p, quality=90) if ext == "jpg" else Image.fromarray(arr).save(p)
        paths.append(p)
    broken = d / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    paths.append(broken)
    return [Sample(path=str(p)) for p in paths]


def expected_rows(samples) -> np.ndarray:
    """What the backbone must give for view 0, computed independently of extract.

    The pipeline decodes JPEGs with DCT scaling down to >= input_size (its preprocessing contract)."""
    return np.stack([preprocess(decode_image(s.path, draft_size=SPEC.input_size), SPEC).mean(axis=(1, 2))
                     for s in samples[:N_GOOD]])


def listing(d):
    return sorted(os.listdir(d))


def test_first_pass_computes_second_pass_reads(tmp_path, images):
    root = tmp_path / "cache"
    bb = CountingBackbone()
    rows, X, errors = extract(images, bb, FeatureCache(root, SPEC), batch_size=3, flush_every=4)
    assert bb.images == N_GOOD
    assert rows == [(i, 0) for i in range(N_GOOD)]  # the broken sample (index 10) has no row
    assert X.shape == (N_GOOD, 3) and X.dtype == np.float32
    np.testing.assert_allclose(X, expected_rows(images), rtol=1e-5, atol=1e-6)
    assert [p for p, _ in errors] == [images[-1].path]
    assert errors[0][1].split(":")[0] in ("truncated", "not_an_image")

    bb2 = CountingBackbone()
    cache2 = FeatureCache(root, SPEC)  # fresh object: index rebuilt from the shards on disk
    assert len(cache2) == N_GOOD
    rows2, X2, errors2 = extract(images, bb2, cache2, batch_size=3)
    assert bb2.calls == 0 and bb2.images == 0
    assert rows2 == rows
    np.testing.assert_array_equal(X2, X)
    assert [p for p, _ in errors2] == [images[-1].path]  # still reported, not cached


def test_shards_and_manifest(tmp_path, images):
    root = tmp_path / "cache"
    cache = FeatureCache(root, SPEC)
    assert cache.dir == root / SPEC.signature()
    extract(images, CountingBackbone(), cache, batch_size=2, flush_every=4)
    names = listing(cache.dir)
    assert not [n for n in names if n.endswith(".tmp")]
    shards = [n for n in names if n.startswith("shard-") and n.endswith(".safetensors")]
    assert set(names) == set(shards) | {"manifest.json"}
    assert len(shards) == 3  # flushed after 4 and 8 rows, then the last 2 at the end
    keys = []
    for n in shards:
        with safe_open(str(cache.dir / n), "numpy") as f:
            k = json.loads(f.metadata()["keys"])
            assert f.get_tensor("features").shape == (len(k), 3)
            keys += k
    assert len(keys) == len(set(keys)) == N_GOOD
    manifest = json.loads((cache.dir / "manifest.json").read_text())
    assert manifest["spec"]["name"] == "count-test" and manifest["spec"]["input_size"] == 16
    assert manifest["spec"]["dim"] == 3 and manifest["spec"]["weights"] == "none"


def test_interrupted_extraction_resumes(tmp_path, images):
    clean_rows, clean_X, _ = extract(images, CountingBackbone(), None, batch_size=2)

    root = tmp_path / "cache"
    bb = CountingBackbone(fail_on=3)  # batches of 2, flush after 4 rows = after call 2; call 3 dies
    with pytest.raises(Boom):
        extract(images, bb, FeatureCache(root, SPEC), batch_size=2, flush_every=4)
    assert bb.images == 4
    cache = FeatureCache(root, SPEC)
    assert len(cache) == 4  # the flushed shard survived the crash, nothing else
    assert not [n for n in listing(cache.dir) if n.endswith(".tmp")]

    bb2 = CountingBackbone()
    rows, X, errors = extract(images, bb2, cache, batch_size=2, flush_every=4)
    assert bb2.images == N_GOOD - 4  # only the missing ones
    assert rows == clean_rows
    np.testing.assert_array_equal(X, clean_X)
    assert len(FeatureCache(root, SPEC)) == N_GOOD


def test_views(tmp_path, images):
    root = tmp_path / "cache"
    bb = CountingBackbone()
    rows, X, errors = extract(images, bb, FeatureCache(root, SPEC), views=(0, 1, 2), batch_size=4)
    assert bb.images == 3 * N_GOOD
    assert rows == [(i, v) for i in range(N_GOOD) for v in (0, 1, 2)]
    assert X.shape == (3 * N_GOOD, 3)
    assert len(errors) == 1  # the broken file is reported once, not once per view
    V = X.reshape(N_GOOD, 3, 3)
    np.testing.assert_allclose(V[:, 0], expected_rows(images), rtol=1e-5, atol=1e-6)
    for i in range(N_GOOD):
        assert not np.allclose(V[i, 1], V[i, 0], atol=1e-4), i  # augmented view differs from the clean one
        assert not np.allclose(V[i, 1], V[i, 2], atol=1e-4), i  # and views differ from each other

    # reproducible: a run without a cache computes the same augmented views
    _, X_nocache, _ = extract(images, CountingBackbone(), None, views=(0, 1, 2), batch_size=5)
    np.testing.assert_allclose(X_nocache, X, rtol=1e-5, atol=1e-6)
    # and the cache serves them (and the clean view alone) without a forward pass
    bb2 = CountingBackbone()
    _, X2, _ = extract(images, bb2, FeatureCache(root, SPEC), views=(0, 1, 2))
    _, X0, _ = extract(images, bb2, FeatureCache(root, SPEC), views=(0,))
    assert bb2.calls == 0
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(X0, X[::3])
    # a view the cache has not seen is computed, and only that one
    bb3 = CountingBackbone()
    rows3, X3, _ = extract(images, bb3, FeatureCache(root, SPEC), views=(0, 3))
    assert bb3.images == N_GOOD  # the clean view is served by the cache, only view 3 is computed
    assert rows3 == [(i, v) for i in range(N_GOOD) for v in (0, 3)]
    np.testing.assert_allclose(X3[::2], X[::3], rtol=1e-5, atol=1e-6)


def test_view_keys():
    sha = "ab" * 32
    assert view_key(sha, 0, None) == sha
    assert view_key(sha, 1, None) != view_key(sha, 2, None)
    assert view_key(sha, 1, None).startswith(sha + ":v1:")


def test_signature_separates_caches(tmp_path, images):
    root = tmp_path / "cache"
    other = replace(SPEC, input_size=24)
    assert other.signature() != SPEC.signature()
    assert replace(SPEC, dim=7).signature() == SPEC.signature()  # dim does not change the features
    assert FeatureCache(root, SPEC).dir != FeatureCache(root, other).dir
    assert FeatureCache(root, SPEC).dir == FeatureCache(root, replace(SPEC)).dir
    assert FeatureCache(root, replace(SPEC, layers=(1,))).dir != FeatureCache(root, SPEC).dir

    extract(images, CountingBackbone(), FeatureCache(root, SPEC))
    bb = CountingBackbone(other)
    extract(images, bb, FeatureCache(root, other))
    assert bb.images == N_GOOD  # nothing borrowed from the other preprocessing
    assert len(FeatureCache(root, SPEC)) == len(FeatureCache(root, other)) == N_GOOD


def test_samples_from_bytes_and_duplicates(tmp_path, images):
    """In-memory samples are keyed by content like files, and a duplicate image is computed once."""
    root = tmp_path / "cache"
    data = [Sample(path=f"mem{i}", data=open(s.path, "rb").read()) for i, s in enumerate(images[:4])]
    dup = Sample(path="copy-of-0", data=data[0].data)
    bb = CountingBackbone()
    rows, X, _ = extract(images[:4], bb, FeatureCache(root, SPEC))
    bb2 = CountingBackbone()
    rows2, X2, _ = extract(data + [dup], bb2, FeatureCache(root, SPEC))
    assert bb2.images == 0
    assert rows2 == [(i, 0) for i in range(5)]
    np.testing.assert_array_equal(X2[:4], X)
    np.testing.assert_array_equal(X2[4], X[0])


def test_thumbnail_views_shrink_both_classes_and_keep_old_view_keys():
    """`augment.p_thumbnail` makes small views (shorter side in thumbnail_side) whatever the class,
    is validated by name, and leaves the views and cache keys of the default config as they were."""
    import random

    from fakescope.data.augment import AugmentConfig, augment, make_view
    from fakescope.training import TrainConfig

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    cfg = TrainConfig(data=[], head_options={"augment.p_thumbnail": 1.0, "augment.thumbnail_side": [32, 40], "l2": 1})
    assert cfg.head_options == {"l2": 1} and cfg.augment.thumbnail_side == (32, 40)
    sides = [min(augment(photo, random.Random(i), cfg.augment).size) for i in range(20)]
    assert all(32 <= s <= 40 for s in sides) and len(set(sides)) > 1
    tiny = Image.new("RGB", (20, 20))  # already smaller than a thumbnail: never upscaled
    assert min(augment(tiny, random.Random(0), cfg.augment).size) <= 20
    with pytest.raises(ValueError, match="unknown augment option"):
        TrainConfig(data=[], head_options={"augment.p_thumb": 1.0})
    with pytest.raises(ValueError, match="expected a value like"):
        TrainConfig(data=[], head_options={"augment.thumbnail_side": 48})
    # off by default: the same views as before the option existed, and the same cache key
    default = AugmentConfig()
    assert replace(default, p_thumbnail=0.0, thumbnail_side=(1, 2)).signature() == default.signature()
    assert cfg.augment.signature() != default.signature()
    assert view_key("ab", 1, default) == view_key("ab", 1, None)
    a, b = make_view(photo, "ab", 1, default), make_view(photo, "ab", 1, replace(default, thumbnail_side=(8, 9)))
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_thumbnails_by_any_resampler_vary_the_kernel_and_keep_old_view_keys():
    """`augment.thumbnail_resample=any` makes each thumbnail with one of Pillow's resamplers (the same
    one for the same image and view), aliased nearest-neighbour among them; "bicubic" (the default)
    leaves the views and cache keys of thumbnail runs as they were; an unknown resampler is refused."""
    import random

    from fakescope.data.augment import RESAMPLERS, AugmentConfig, augment, make_view, thumbnail
    from fakescope.training import TrainConfig

    noise = np.random.default_rng(1).integers(0, 256, (240, 240, 3), dtype=np.uint8)
    photo = Image.fromarray(noise)  # pixel noise: an antialiased resize averages it away, nearest keeps it
    assert np.asarray(thumbnail(photo, 40, "nearest")).std() > 60 > 30 > np.asarray(thumbnail(photo, 40, "bicubic")).std()
    cfg = TrainConfig(data=[], head_options={"augment.p_thumbnail": 1.0, "augment.thumbnail_resample": "any"}).augment
    quiet = replace(cfg, crop_area=(1.0, 1.0), p_jpeg=0.0, p_blur=0.0, p_flip=0.0, thumbnail_side=(40, 40))
    looks = {np.asarray(augment(photo, random.Random(i), quiet)).tobytes() for i in range(40)}
    assert len(looks) >= 5  # several kernels drawn
    assert np.array_equal(np.asarray(make_view(photo, "ab", 1, cfg)), np.asarray(make_view(photo, "ab", 1, cfg)))
    bicubic = AugmentConfig(p_thumbnail=1.0)
    assert replace(bicubic, thumbnail_resample="bicubic").signature() == bicubic.signature() != cfg.signature()
    fixed = replace(bicubic, thumbnail_resample="lanczos")
    assert fixed.signature() != bicubic.signature()
    # the default draws no resampler: its views are the ones made before the option existed (crop,
    # the thumbnail draw, its side, an antialiased bicubic resize)
    from fakescope.data.augment import random_crop, view_seed
    plain = replace(bicubic, p_jpeg=0.0, p_blur=0.0, p_flip=0.0)
    for view in range(1, 6):
        rng = random.Random(view_seed("ab", view))
        crop = random_crop(photo, rng, plain.crop_area)
        assert rng.random() < 1.0
        side = rng.randint(*plain.thumbnail_side)
        size = tuple(max(1, round(v * side / min(crop.size))) for v in crop.size)
        assert np.array_equal(np.asarray(crop.resize(size, Image.BICUBIC)), np.asarray(make_view(photo, "ab", view, plain)))
    assert set(RESAMPLERS) >= {"nearest", "bicubic", "lanczos"}
    with pytest.raises(ValueError, match="thumbnail_resample"):
        TrainConfig(data=[], head_options={"augment.thumbnail_resample": "sinc"})


def test_noise_views_add_noise_of_the_drawn_strength_and_keep_old_view_keys():
    """`augment.p_noise` adds Gaussian noise (sigma in noise_sigma, 8-bit units) to a view; the same
    seed gives the same noise; off, views and cache keys are those from before the option existed."""
    from fakescope.data.augment import AugmentConfig, make_view

    flat = Image.new("RGB", (64, 48), (120, 120, 120))
    quiet = AugmentConfig(crop_area=(1.0, 1.0), p_downscale=0.0, p_jpeg=0.0, p_blur=0.0, p_flip=0.0)
    noisy = replace(quiet, p_noise=1.0, noise_sigma=(4.0, 6.0))
    for view in (1, 2, 3):
        a = np.asarray(make_view(flat, "ab", view, noisy), dtype=np.float64)
        assert 3.0 < a.std() < 7.0 and abs(a.mean() - 120) < 1.0  # zero-mean noise of sigma 4-6
        assert np.array_equal(a, np.asarray(make_view(flat, "ab", view, noisy)))  # reproducible
    assert np.array_equal(np.asarray(make_view(flat, "ab", 1, quiet)), np.asarray(flat))  # off: untouched
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    default = AugmentConfig()
    assert replace(default, noise_sigma=(0.5, 2.0)).signature() == default.signature()
    assert replace(default, p_noise=0.2).signature() != default.signature()
    a, b = make_view(photo, "ab", 1, default), make_view(photo, "ab", 1, replace(default, noise_sigma=(8.0, 9.0)))
    assert np.array_equal(np.asarray(a), np.asarray(b))


class PickyBackbone(CountingBackbone):
    """Raises on any batch holding an image whose row is `poison` (a model that cannot take one input)."""

    def __init__(self, poison: np.ndarray):
        super().__init__()
        self.poison = poison

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        if np.any(np.all(np.isclose(batch.mean(axis=(2, 3)), self.poison, atol=1e-6), axis=1)):
            raise ValueError("cannot take this input")
        return super().forward(batch, want_patches)


def test_an_image_the_model_fails_on_fails_alone(tmp_path, images):
    expected = expected_rows(images)
    bb = PickyBackbone(poison=expected[4])
    rows, X, errors = extract(images, bb, FeatureCache(tmp_path / "cache", SPEC), batch_size=3)
    good = [i for i in range(N_GOOD) if i != 4]
    assert rows == [(i, 0) for i in good]  # its batch-mates keep their rows
    np.testing.assert_allclose(X, expected[good], rtol=1e-5, atol=1e-6)
    assert dict(errors)[images[4].path] == "forward_failed: ValueError: cannot take this input"
    assert images[-1].path in dict(errors) and len(errors) == 2  # the broken file, as before
    # a later run reads the good rows from the cache and tries the failed image again
    bb2 = CountingBackbone()
    rows, _, errors = extract(images, bb2, FeatureCache(tmp_path / "cache", SPEC), batch_size=3)
    assert bb2.images == 1 and len(rows) == N_GOOD and len(errors) == 1


def test_a_broken_model_still_stops_the_run(images):
    # every input fails, a plain grey image too: the model's fault, raised rather than one error per image
    with pytest.raises(Boom):
        extract(images, CountingBackbone(fail_on=1), None, batch_size=3)


def test_a_view_that_cannot_be_made_fails_its_image_with_an_error(monkeypatch, images):
    import fakescope.pipeline as pipeline

    real = pipeline.make_view

    def make_view(img, sha, view, cfg):  # view 1 of image 2 cannot be made; every other view can
        if view == 1 and sha == sha_of(images[2]):
            raise ValueError("no such view")
        return real(img, sha, view, cfg)

    monkeypatch.setattr(pipeline, "make_view", make_view)
    rows, _, errors = extract(images, CountingBackbone(), None, views=(0, 1), batch_size=4)
    assert {i for i, _ in rows} == set(range(N_GOOD)) - {2}  # an image is all its views or none
    assert dict(errors)[images[2].path] == "preprocess_failed: ValueError: no such view"
    assert len(errors) == 2  # and the broken file, once


def test_training_view_features_drop_only_the_image_the_model_fails_on(tmp_path, images):
    """The CoDE / natural-traces adapter's view features (training/data.py) isolate a failing input
    the way extract does: that image is left out (ok False), its batch-mates keep their features."""
    from fakescope.training.data import view_features
    from fakescope.training.views import ViewConfig

    cfg = ViewConfig(out_size=None, scale=(0.4, 1.0))
    clean = np.stack([preprocess(decode_image(s.path), SPEC).mean(axis=(1, 2)) for s in images[:N_GOOD]])
    want, ok_all = view_features(images, CountingBackbone(), None, cfg, n_views=2, include_clean=True)
    np.testing.assert_allclose(want[:N_GOOD, 0], clean, rtol=1e-5, atol=1e-6)
    assert ok_all.tolist() == [True] * N_GOOD + [False]  # the broken file

    picky = PickyBackbone(poison=clean[4])
    picky.batch_size = 3
    F, ok = view_features(images, picky, FeatureCache(tmp_path / "cache", SPEC), cfg, n_views=2, include_clean=True)
    assert ok.tolist() == [i != 4 for i in range(N_GOOD)] + [False]
    np.testing.assert_allclose(F[ok], want[ok], rtol=1e-5, atol=1e-6)
    assert not F[4].any()
    with pytest.raises(Boom):  # a broken model still stops the run
        view_features(images, CountingBackbone(fail_on=1), None, cfg, n_views=2, include_clean=True)
