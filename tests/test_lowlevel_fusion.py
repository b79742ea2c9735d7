"""The low-level expert (NPR residual CNN, `--method lowlevel`) and fused detectors (`--method fusion`):
the residual against a hand computation, native views that keep pixels, training through the CLI on
images whose only difference is an up-sampling trace, the stacking layer's gating by image size
against a hand computation, and a fused model folder: saved, moved, loaded, checked as data, scanned
with each expert's score in the JSON line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import app  # noqa: E402
from fakescope.detector import load_detector  # noqa: E402
from fakescope.errors import ModelFolderError  # noqa: E402
from fakescope.uncertainty import REFEREE_VETO, knn_distance  # noqa: E402

TINY_LL = ["--set", "image_size=16", "--set", "width=8", "--set", "epochs=4", "--set", "batch_size=16",
           "--set", "workers=0", "--set", "region=48", "--set", "min_side=32"]


def _noise(rng, side: int, upsampled: bool) -> np.ndarray:
    """Colour noise; `upsampled`: drawn at half size and enlarged by nearest neighbour, the trace an
    up-sampling layer leaves (each 2x2 cell one colour) with the same pixel statistics."""
    if upsampled:
        half = rng.integers(40, 216, (side // 2, side // 2, 3))
        return half.repeat(2, 0).repeat(2, 1).astype(np.uint8)
    return rng.integers(40, 216, (side, side, 3)).astype(np.uint8)


def _noise_source(root, seed: int, n: int, sides, tag: str = "") -> None:
    """real/cam: noise; fake/up: the same noise statistics, 2x nearest up-sampled; image i is sides(i) px."""
    rng = np.random.default_rng(seed)
    for label, sub in (("real", "cam"), ("fake", "up")):
        d = root / label / sub
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_noise(rng, sides(i), label == "fake")).save(d / f"{label}{tag}{i:02d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """real/: noise; fake/up: the same noise statistics, 2x nearest up-sampled. 48 px and 24 px images."""
    root = tmp_path_factory.mktemp("lowlevel") / "data"
    _noise_source(root, 0, 24, lambda i: 48 if i < 16 else 24)
    return root


@pytest.fixture(scope="module")
def data_b(tmp_path_factory):
    """A second source like `data` (other noise), so a run has a source to hold out of a head."""
    root = tmp_path_factory.mktemp("lowlevel-b") / "data"
    _noise_source(root, 1, 12, lambda i: 48, tag="b")
    return root


def train(args):
    return CliRunner().invoke(app, ["train", *args], catch_exceptions=False)


def test_npr_residual_matches_hand_computation():
    from fakescope.backbones.encoders import npr_residual
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # each pixel minus the top-left pixel of its 2x2 cell
    want = torch.tensor([[0, 1, 0, 1], [4, 5, 4, 5], [0, 1, 0, 1], [4, 5, 4, 5]], dtype=torch.float32)
    assert torch.equal(npr_residual(x)[0, 0], want)
    up = torch.rand(1, 3, 3, 3).repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest up-sampled: no residual
    assert torch.count_nonzero(npr_residual(up)) == 0
    assert npr_residual(torch.rand(2, 3, 7, 9)).shape == (2, 3, 6, 8)  # odd sides lose their last row/column


def test_native_view_keeps_native_pixels():
    from fakescope.training.views import NativeViewConfig, native_view
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3)).astype(np.uint8))
    plain = NativeViewConfig(size=16, p_flip=0, p_rotate=0, p_blur=0, p_resize=0, p_jpeg=0)
    view = np.asarray(native_view(img, np.random.default_rng(2), plain))
    src = np.asarray(img)
    hits = [(t, l) for t in range(25) for l in range(35) if np.array_equal(src[t:t + 16, l:l + 16], view)]
    assert view.shape == (16, 16, 3) and len(hits) == 1  # a crop of the original pixels, not a resampled copy


def test_lowlevel_learns_the_upsampling_trace(data, tmp_path, one_thread):
    out = tmp_path / "ll"
    r = train(["--data", str(data), "--method", "lowlevel", "--out", str(out), "--no-cache", *TINY_LL])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "detector.json").read_text())
    assert meta["backbone"]["kind"] == "trained:" and not meta["backbone"]["weights"].startswith("/")
    assert meta["metadata"]["recipe"] == "lowlevel"
    assert meta["metadata"]["lowlevel"]["left_out_small"] > 0  # the 24 px images: under min_side, not upscaled in
    det = load_detector(out)
    rng = np.random.default_rng(7)  # new images, never seen
    real = [_noise(rng, 48, False) for _ in range(6)]
    fake = [_noise(rng, 48, True) for _ in range(6)]
    s = [r.score for r in det.predict(real + fake)]
    assert min(s[6:]) > max(s[:6])  # every up-sampled image above every plain one


def test_fusion_head_gates_experts_by_image_size():
    from fakescope.heads import make_head
    from fakescope.heads.fusion import FusionHead, logit
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(40, 2)), rng.normal(size=(40, 3))
    y = (X1[:, 0] + X2[:, 1] > 0).astype(int)
    h1, h2 = make_head("linear"), make_head("linear")
    h1.fit(X1, y), h2.fit(X2, y)
    sizes = np.array([[32, 32], [500, 300]] * 20, np.float32)  # width, height
    X = np.concatenate([X1, X2, sizes], axis=1)
    head = FusionHead(experts=[{"name": "big", "dim": 2, "domain": [64, None]},
                               {"name": "small", "dim": 3, "domain": [0, 96]}], heads=[h1, h2],
                      weights=[1.5, -0.5, 0.25, 0.75], bias=-0.2)
    a = np.stack([sizes.min(1) >= 64, sizes.min(1) <= 96], 1).astype(float)
    z = np.stack([logit(h1.predict(X1)), logit(h2.predict(X2))], 1)
    want = 1 / (1 + np.exp(-((a * z) @ [1.5, -0.5] + a @ [0.25, 0.75] - 0.2)))
    np.testing.assert_allclose(head.predict(X), want, rtol=1e-5)
    scores = head.expert_scores(X)
    assert np.isnan(scores["big"][0]) and not np.isnan(scores["big"][1])      # 32 px: too small to crop
    assert np.isnan(scores["small"][1]) and not np.isnan(scores["small"][0])  # 300 px: no thumbnail
    again = FusionHead.from_state(json.loads(json.dumps(head.config())), head.state())
    np.testing.assert_allclose(again.predict(X), head.predict(X), rtol=1e-5)

    # the fused score and the experts' scores (what a scan line shows) from one run of each expert's head
    calls = []
    for h in (h1, h2):
        h.predict = (lambda f: lambda x: calls.append(1) or f(x))(h.predict)
    fused, by_name = head.predict_with_experts(X)
    assert len(calls) == 2
    np.testing.assert_allclose(fused, want, rtol=1e-5)
    for name in ("big", "small"):
        np.testing.assert_array_equal(by_name[name], scores[name])


FUSION = ["--set", "experts=lowlevel,thumbnail-npr", "--set", "lowlevel.domain=32:",
          "--set", "thumbnail-npr.domain=0:40"]
for _expert in ("lowlevel", "thumbnail-npr"):  # each expert's own options: <expert>.<key>=<value>
    FUSION += [x if x == "--set" else f"{_expert}.{x}" for x in TINY_LL[:-2]]  # min_side: the domain says it


def test_fused_detector_trains_saves_moves_and_scans(data, tmp_path, one_thread):
    out = tmp_path / "fused"
    r = train(["--data", str(data), "--method", "fusion", "--out", str(out), "--no-cache", *FUSION])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "detector.json").read_text())
    assert meta["method"] == "fusion" and meta["backbone"]["kind"] == "fusion"
    parts = json.loads(dict(meta["backbone"]["extra"])["parts"])
    assert [p["kind"] for p in parts] == ["trained:", "trained:", "imagesize"]
    assert all(not p["weights"].startswith("/") for p in parts[:2])  # encoders inside the folder
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    det = load_detector(moved)
    rng = np.random.default_rng(11)
    imgs = [_noise(rng, 48, False), _noise(rng, 48, True), _noise(rng, 24, False), _noise(rng, 24, True)]
    res = det.predict(imgs)
    assert all(r.error is None for r in res)
    assert res[0].experts["lowlevel"] is not None and res[0].experts["thumbnail-npr"] is None   # 48 px
    assert res[2].experts["lowlevel"] is None and res[2].experts["thumbnail-npr"] is not None   # 24 px
    assert res[1].score > res[0].score
    # the scan path (composite backbone on one decoded image) and the training path (each part through
    # its own feature rows) give the same features
    from fakescope.data.samples import Sample
    from fakescope.features import extract
    from fakescope.pipeline import prepare
    paths = []
    for i, a in enumerate(imgs):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    _, X, _ = extract([Sample(path=p) for p in paths], det.backbone, None)
    direct = det.backbone.forward(np.stack([prepare(Sample(path=p), det.spec)[0].array for p in paths])).pooled
    np.testing.assert_allclose(X, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(X[:, -2:], [[48, 48], [48, 48], [24, 24], [24, 24]])
    # a JSON line of `fakescope scan` carries the experts' scores
    lines = tmp_path / "scan.jsonl"
    r = CliRunner().invoke(app, ["scan", paths[0], paths[2], "--model", str(moved), "--out", str(lines)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in lines.read_text().splitlines()]
    assert rows[0]["experts"]["thumbnail-npr"] is None and rows[1]["experts"]["lowlevel"] is None
    assert rows[0]["score"] == pytest.approx(res[0].score, abs=1e-6)
    # and the service answers with them too
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from fakescope.service.app import Models, ServiceConfig, create_app
    from test_service import wait_ready
    with TestClient(create_app(ServiceConfig(localizer=None), loader=lambda cfg: Models(det, None))) as client:
        wait_ready(client)
        body = client.post("/v1/detect", files={"file": ("a.png", open(paths[2], "rb").read())}).json()
    assert body["experts"]["lowlevel"] is None
    assert body["experts"]["thumbnail-npr"] == pytest.approx(res[2].experts["thumbnail-npr"], abs=1e-5)


def test_fused_model_folder_is_checked_as_data(data, tmp_path):
    from fakescope.backbones.fusion import imagesize_spec
    from fakescope.backbones.spec import fusion_spec
    from fakescope.backbones import parse_spec
    from dataclasses import asdict
    d = tmp_path / "hostile"
    d.mkdir()
    outside = asdict(parse_spec("pixels?size=16"))
    outside.update(kind="trained:", name="trained:/etc", weights="/etc#0123")
    spec = asdict(fusion_spec([imagesize_spec()]))
    spec["extra"] = [["parts", json.dumps([outside, asdict(imagesize_spec())])]]
    (d / "detector.json").write_text(json.dumps({"format": "fakescope.detector/1", "id": "x", "version": "1",
                                                "backbone": spec, "method": "fusion", "head": {}, "threshold": 0.5}))
    from safetensors.numpy import save_file
    save_file({"stacker.weights": np.zeros(2, np.float32)}, str(d / "head.safetensors"))
    with pytest.raises(ModelFolderError, match="outside the model folder"):
        load_detector(d)
    spec["extra"] = [["parts", "not json"]]
    (d / "detector.json").write_text(json.dumps({"format": "fakescope.detector/1", "id": "x", "version": "1",
                                                "backbone": spec, "method": "fusion", "head": {}, "threshold": 0.5}))
    with pytest.raises(ModelFolderError, match="parts"):
        load_detector(d)
    native_drafted = asdict(parse_spec("pixels?size=16&resize=native_crop"))
    native_drafted["draft_gap"] = 2.0  # a native read must see every pixel: no DCT-scaled decode
    spec["extra"] = [["parts", json.dumps([native_drafted, asdict(imagesize_spec())])]]
    (d / "detector.json").write_text(json.dumps({"format": "fakescope.detector/1", "id": "x", "version": "1",
                                                "backbone": spec, "method": "fusion", "head": {}, "threshold": 0.5}))
    with pytest.raises(ModelFolderError, match="draft_gap"):
        load_detector(d)


def test_equalising_domains_gives_each_group_the_target_false_positive_rate():
    from fakescope.heads import make_head
    from fakescope.heads.fusion import FusionHead
    rng = np.random.default_rng(3)
    n = 400
    X1, X2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    h1, h2 = make_head("linear"), make_head("linear")
    y = (X1[:, 0] > 0).astype(int)
    h1.fit(X1, y), h2.fit(X2, (X2[:, 0] > 0).astype(int))
    small = np.arange(n) < n // 2
    sizes = np.where(small[:, None], [[32, 32]], [[800, 600]]).astype(np.float32)
    X = np.concatenate([X1, X2, sizes], axis=1)
    head = FusionHead(experts=[{"name": "all", "dim": 2, "domain": [0, None]},
                               {"name": "thumb", "dim": 2, "domain": [0, 96]}], heads=[h1, h2],
                      weights=[1.0, 1.0, 0.0, 2.0], bias=0.0)  # the thumbnail group is pushed towards fake
    before = head.predict(X)
    assert (before[small] >= 0.5).mean() > 0.3  # one cut: the small images' reals are called fake far more
    cuts = head.equalise_domains(X, 0.05)
    assert set(cuts) == {"all", "all+thumb"}
    after = head.predict(X)
    for group in (small, ~small):
        assert 0.03 <= (after[group] >= 0.5).mean() <= 0.05
    # the order of images inside a group is unchanged (only offsets moved)
    assert (np.argsort(after[small], kind="stable") == np.argsort(before[small], kind="stable")).all()


def test_anchoring_to_the_first_expert_keeps_its_scores_and_cuts_the_others_at_its_threshold():
    from fakescope.heads import make_head
    from fakescope.heads.fusion import FusionHead
    rng = np.random.default_rng(5)
    n = 600
    X1, X2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    h1, h2 = make_head("linear"), make_head("linear")
    h1.fit(X1, (X1[:, 0] > 0).astype(int)), h2.fit(X2, (X2[:, 0] > 0).astype(int))
    side = np.where(np.arange(n) < 300, 32, np.where(np.arange(n) < 590, 800, 50))  # 10 images of 50 px
    X = np.concatenate([X1, X2, X2, np.stack([side, side], 1)], axis=1).astype(np.float64)
    head = FusionHead(experts=[{"name": "all", "dim": 2, "domain": [0, None]},
                               {"name": "thumb", "dim": 2, "domain": [0, 40]},
                               {"name": "mid", "dim": 2, "domain": [41, 96]}], heads=[h1, h2, h2],
                      weights=[2.0, 0.7, 0.0, 0.3, 1.5, 0.0], bias=-0.4)

    def logits():  # the stacker's output before the sigmoid (float64: no saturation)
        return head.stacking_features(X) @ head.weights + head.bias

    before = logits()
    threshold = 0.3
    offsets = head.anchor_to_first(X, threshold, 0.05)
    after = logits()
    big, thumb, mid = side == 800, side == 32, side == 50
    np.testing.assert_allclose(head.predict(X)[big], h1.predict(X1[big]), rtol=1e-5, atol=1e-6)  # its own score
    assert 0.03 <= (head.predict(X)[thumb] >= threshold).mean() <= 0.05  # its own reals set the thumbnails' cut
    shift = after[thumb] - before[thumb] / 2.0  # the ranking inside a group: scaled, shifted, never reordered
    np.testing.assert_allclose(shift, shift[0], atol=1e-9)
    # a group with too few reals (10 < 20) keeps its fitted offset, divided by the first expert's weight
    assert offsets["all+mid"] == pytest.approx((0.3 + 0.0 - 0.4) / 2.0)
    np.testing.assert_allclose(after[mid], before[mid] / 2.0, atol=1e-9)

    # the anchored stacker learns from the rows another expert speaks for, and only from them
    y = (X1[:, 0] + X2[:, 0] > 0).astype(int)
    y[big] = (X1[big, 0] < 0)  # the big images say the opposite: they must not move the weights
    info = head.fit_anchored(X, y)
    subset = FusionHead(experts=head.experts, heads=head.heads)
    subset.fit(X[~big], y[~big])
    assert info["stacker_rows"] == int((~big).sum())
    np.testing.assert_allclose(head.weights, subset.weights)
    y_one = np.where(big, y, 0)  # no fake beyond the first expert's own domain: nothing to learn there
    assert "first expert alone" in head.fit_anchored(X, y_one)["stacker"]
    np.testing.assert_array_equal(head.weights, [1, 0, 0, 0, 0, 0])


def test_fused_cuts_first_is_the_first_experts_detector_outside_the_thumbnail_domain(data, tmp_path, one_thread):
    """cuts=first: the fused detector scores, thresholds and abstains on 48 px images exactly as the
    first expert trained alone does; the thumbnail expert draws its own, larger share of --data
    without any of the run's held-out images."""
    first = ["--backbone", "pixels?size=16", "--per-class", "16", "--no-cache"]
    alone, fused = tmp_path / "alone", tmp_path / "fused"
    assert train(["--data", str(data), "--method", "linear", "--out", str(alone), *first]).exit_code == 0
    opts = ["--set", "experts=clip,thumbnail-npr", "--set", "clip.backbone=pixels?size=16", "--set", "cuts=first",
            "--set", "thumbnail-npr.domain=0:40", "--set", "thumbnail-npr.per_class=24"]
    opts += [x if x == "--set" else f"thumbnail-npr.{x}" for x in TINY_LL[:-2]]
    r = train(["--data", str(data), "--method", "fusion", "--out", str(fused), *first, *opts])
    assert r.exit_code == 0, r.output
    a, f = load_detector(alone), load_detector(fused)
    assert f.threshold == a.threshold
    assert f.uncertainty.config() == a.uncertainty.config()
    rng = np.random.default_rng(3)
    big = [_noise(rng, 48, up) for up in (False, True) * 4]
    runs = _count_rows(f.backbone.parts[1])
    ra, rf = a.predict(big), f.predict(big)
    np.testing.assert_allclose([r.score for r in rf], [r.score for r in ra], rtol=1e-5, atol=1e-6)
    assert [r.label for r in rf] == [r.label for r in ra]
    # a scan runs an expert only on the images in its domain: the thumbnail expert not on 48 px images
    assert runs == [] and all(r.experts["thumbnail-npr"] is None for r in rf)
    small = [_noise(rng, 24, up) for up in (False, True) * 2]
    assert all(r.experts["thumbnail-npr"] is not None for r in f.predict(small + big[:2])[:4]) and sum(runs) == 4
    f.every_expert = True  # every expert on every image: the same scores, and its score on the 48 px ones too
    eager = f.predict(big)
    assert [(r.score, r.label) for r in eager] == [(r.score, r.label) for r in rf]
    assert all(r.experts["thumbnail-npr"] is None for r in eager) and sum(runs) == 4 + len(big)
    meta = f.metadata
    assert meta["fit"]["cuts"] == "first"
    held = meta["validation"]["n"]
    assert meta["experts"]["clip"]["train"]["n"] == 32 - held          # the run's training split
    assert meta["experts"]["thumbnail-npr"]["train"]["n"] > 32 - held  # its own per_class


def test_an_experts_own_share_of_the_data_leaves_out_the_runs_held_out_images(data):
    from fakescope.training.common import held_out_split, load_sources, source_parts
    from fakescope.training.fit import TrainConfig
    from fakescope.training.fusion import expert_configs, expert_pools, own_shares
    cfg = TrainConfig(data=[str(data)], method="fusion", per_class=8, val_fraction=0.3,
                      head_options={"experts": "clip,thumbnail", "thumbnail.per_class": "24"})
    shares = own_shares(cfg, expert_configs(cfg, cfg.head_options))
    assert shares == {"thumbnail": 24}
    pools = expert_pools(cfg, shares, source_parts(cfg.data))
    train, val = held_out_split(cfg, load_sources(cfg.data, cfg.per_class))
    pool = {s.path for s in pools["thumbnail"]}
    assert set(pools) == {"thumbnail"} and len(pool) > len(train)
    assert {s.path for s in train} <= pool and not pool & {s.path for s in val}
    assert not {s.group_key() for s in pools["thumbnail"]} & {s.group_key() for s in val}


def test_a_fused_expert_reading_intermediate_layers_saves_loads_and_scores(data, tmp_path, one_thread):
    """A part with ?layers= has a measured width (recorded in the fused spec), and its "uncertain"
    rule measures familiarity in its pooled embedding only."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                   image_size=32, patch_size=8)).eval().save_pretrained(tmp_path / "dino")
    out = tmp_path / "fused-layers"
    opts = ["--set", "experts=clip,thumbnail-npr", "--set", f"clip.backbone=hf-dinov2:{tmp_path / 'dino'}?layers=1,2",
            "--set", "cuts=first", "--set", "thumbnail-npr.domain=0:40"]
    opts += [x if x == "--set" else f"thumbnail-npr.{x}" for x in TINY_LL[:-2]]
    r = train(["--data", str(data), "--method", "fusion", "--out", str(out), "--no-cache", "--per-class", "16", *opts])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "detector.json").read_text())
    widths = json.loads(dict(meta["backbone"]["extra"])["widths"])
    assert widths[0] == 3 * 32 and widths[-1] == 2  # pooled + two layers' class tokens; the image size
    assert meta["uncertainty"]["columns"] == 32     # familiarity in the pooled embedding
    moved = tmp_path / "moved-layers"
    shutil.move(str(out), moved)
    det = load_detector(moved)
    rng = np.random.default_rng(2)
    res = det.predict([_noise(rng, 48, False), _noise(rng, 24, True)])
    assert all(r.error is None and 0 <= r.score <= 1 for r in res)
    assert res[0].experts["thumbnail-npr"] is None and res[1].experts["thumbnail-npr"] is not None
    meta["backbone"]["extra"] = [["widths", "[1]"] if k == "widths" else [k, v] for k, v in meta["backbone"]["extra"]]
    (moved / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="widths"):
        load_detector(moved)


def _count_rows(backbone) -> list[int]:
    """Spy on a fused detector's part: the number of images of each of its forward passes."""
    runs, forward = [], backbone.forward
    def counted(x, *args, **kwargs):
        runs.append(len(x))
        return forward(x, *args, **kwargs)
    backbone.forward = counted
    return runs


def _referee_head():
    """A voter reading columns 0-1 and a referee reading columns 2-3 (domain: 64 px and up)."""
    from fakescope.heads import make_head
    from fakescope.heads.fusion import FusionHead
    rng = np.random.default_rng(7)
    n = 400
    X1, X2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    h1, h2 = make_head("linear"), make_head("linear")
    h1.fit(X1, (X1[:, 0] > 0).astype(int)), h2.fit(X2, (X2[:, 0] > 0).astype(int))
    side = np.where(np.arange(n) < 100, 32, 500)
    X = np.concatenate([X1, X2, np.stack([side, side], 1)], axis=1)
    head = FusionHead(experts=[{"name": "voter", "dim": 2, "domain": [0, None]},
                               {"name": "ref", "dim": 2, "domain": [64, None], "role": "referee", "cut": None}],
                      heads=[h1, h2])
    return head, X, X1, X2, side, h2


def test_a_referee_never_votes_and_objects_where_its_verdict_differs():
    from fakescope.heads import make_head
    from fakescope.heads.fusion import FusionHead
    head, X, X1, X2, side, h2 = _referee_head()
    y = (X1[:, 0] + X2[:, 0] > 0).astype(int)  # the referee's columns carry signal: it still must not vote
    head.fit(X, y)
    other = make_head("linear")
    other.fit(X2, (X2[:, 1] > 0).astype(int))
    swapped = FusionHead(experts=head.experts, heads=[head.heads[0], other], weights=head.weights, bias=head.bias)
    np.testing.assert_array_equal(swapped.predict(X), head.predict(X))  # the fused score ignores the referee
    assert not np.isnan(head.expert_scores(X)["ref"][side == 500]).any()  # but the scan line shows its score

    reals = y == 0
    cuts = head.set_referee_cuts(X[reals], 0.1)
    p_ref = head.expert_probabilities(X)[:, 1]
    np.testing.assert_allclose(p_ref, h2.predict(X2), rtol=1e-5)
    mine = reals & (side == 500)
    assert cuts["ref"] == head.experts[1]["cut"]
    assert (p_ref[mine] >= cuts["ref"]).mean() <= 0.1 + 1 / mine.sum()
    scores, threshold = head.predict(X), 0.5
    want = (side == 500) & ((p_ref >= cuts["ref"]) != (scores >= threshold))
    got = head.disagreements(X, scores, threshold)
    np.testing.assert_array_equal(got, want)
    assert got.any() and not got[side == 32].any()  # thumbnails: outside the referee's domain

    again = FusionHead.from_state(json.loads(json.dumps(head.config())), head.state())
    np.testing.assert_array_equal(again.disagreements(X, scores, threshold), want)
    # objecting to "fake" verdicts only: where the referee says real and the detector fake
    head.experts[1]["objects"] = "fake"
    one_sided = head.disagreements(X, scores, threshold)
    np.testing.assert_array_equal(one_sided, want & (scores >= threshold))
    assert one_sided.any() and (want & ~one_sided).any()
    head.experts[1]["objects"] = "both"
    few = FusionHead(experts=[dict(e) for e in head.experts], heads=head.heads, weights=head.weights)
    assert few.set_referee_cuts(X[:10], 0.1) == {"ref": None}  # too few reals: no cut, no objection
    assert not few.disagreements(X, scores, threshold).any()


def test_a_detector_with_a_referee_says_uncertain_when_the_experts_disagree():
    from fakescope.backbones.fusion import imagesize_spec
    from fakescope.backbones.spec import fusion_spec
    from fakescope.detector import Detector
    from fakescope.uncertainty import EXPERTS_DISAGREE, UNFAMILIAR, UncertaintyRule
    head, X, X1, X2, side, h2 = _referee_head()
    y = (X1[:, 0] + X2[:, 0] > 0).astype(int)
    head.fit(X, y)
    head.set_referee_cuts(X[y == 0], 0.1)
    det = Detector(spec=fusion_spec([imagesize_spec()]), head=head, threshold=0.5)
    scores = head.predict(X)
    disagree = head.disagreements(X, scores, 0.5)
    verdicts = det.verdicts(scores, X)
    assert [r for _, r in verdicts] == [EXPERTS_DISAGREE if d else None for d in disagree]
    assert all(label == ("uncertain" if d else "fake" if s >= 0.5 else "real")
               for (label, _), d, s in zip(verdicts, disagree, scores))
    # "unfamiliar" comes first; a referee's objection comes before "near threshold"
    from fakescope.uncertainty import NEAR_THRESHOLD, knn_distance
    ref = np.tile([[1.0, 0.0]], (8, 1)).astype(np.float32)  # the voter's columns pointing one way are familiar
    det.uncertainty = UncertaintyRule(reference=ref, k=1, max_distance=0.5, low=0.0, high=1.0, quantile=0.99,
                                      miss_rate=0.05)  # every score in the band
    far = knn_distance(X[:, :2], ref, 1) > 0.5
    assert (far & disagree).any() and (~far & disagree).any() and (~far & ~disagree).any()
    reasons = [r for _, r in det.verdicts(scores, X)]
    assert reasons == [UNFAMILIAR if f else EXPERTS_DISAGREE if d else NEAR_THRESHOLD for f, d in zip(far, disagree)]
    det.abstain = False
    assert all(label != "uncertain" for label, _ in det.verdicts(scores, X))


def test_a_referee_veto_answers_real_where_it_is_surest():
    from fakescope.backbones.fusion import imagesize_spec
    from fakescope.backbones.spec import fusion_spec
    from fakescope.detector import Detector
    from fakescope.heads.fusion import FusionHead
    from fakescope.uncertainty import EXPERTS_DISAGREE, UNFAMILIAR, UncertaintyRule
    head, X, X1, X2, side, h2 = _referee_head()
    y = (X1[:, 0] + X2[:, 0] > 0).astype(int)
    head.fit(X, y)
    head.experts[1]["objects"] = "fake"
    assert head.set_referee_vetoes({"ref": 0.1}) == {"ref": None}  # no cut yet: nothing to veto with
    cut = head.set_referee_cuts(X[y == 0], 0.1)["ref"]
    assert head.set_referee_vetoes({}) == {"ref": None}  # none given: no veto
    assert head.set_referee_vetoes({"ref": cut + 0.2}) == {"ref": cut}  # never above the cut
    p_ref = head.expert_probabilities(X)[:, 1]
    mine = (y == 1) & (side == 500)
    veto = float(np.quantile(p_ref[mine], 0.2))
    assert veto < cut and head.set_referee_vetoes({"ref": veto}) == {"ref": veto}
    scores, threshold = head.predict(X), 0.5
    want = (side == 500) & (scores >= threshold) & (p_ref < veto)
    np.testing.assert_array_equal(head.vetoes(X, scores, threshold), want)
    assert want.any() and (head.disagreements(X, scores, threshold) & ~want).any()  # a veto is a surer objection
    again = FusionHead.from_state(json.loads(json.dumps(head.config())), head.state())
    np.testing.assert_array_equal(again.vetoes(X, scores, threshold), want)

    det = Detector(spec=fusion_spec([imagesize_spec()]), head=head, threshold=threshold)
    disagree = head.disagreements(X, scores, threshold)
    assert det.verdicts(scores, X) == [("real", REFEREE_VETO) if v else ("uncertain", EXPERTS_DISAGREE) if d
                                       else ("fake" if s >= threshold else "real", None)
                                       for v, d, s in zip(want, disagree, scores)]
    ref = np.tile([[1.0, 0.0]], (8, 1)).astype(np.float32)
    det.uncertainty = UncertaintyRule(reference=ref, k=1, max_distance=0.5, low=0.0, high=1.0, quantile=0.99,
                                      miss_rate=0.05)
    far = knn_distance(X[:, :2], ref, 1) > 0.5
    assert (far & want).any() and (~far & want).any()
    got = det.verdicts(scores, X)
    assert all(g == ("uncertain", UNFAMILIAR) for g, f in zip(got, far) if f)  # "unfamiliar" still comes first
    assert all(g == ("real", REFEREE_VETO) for g, f, v in zip(got, far, want) if v and not f)
    det.abstain = False  # the rule off: the threshold alone
    assert det.verdicts(scores, X) == [("fake" if s >= threshold else "real", None) for s in scores]


def test_a_fused_detector_with_a_referee_trains_saves_and_scans(data, data_b, tmp_path, one_thread):
    """--method fusion with a referee: the fused score is the first expert's alone; the referee's cut
    is set on held-out reals and saved; a folder whose referee cut or role is not data is refused."""
    first = ["--backbone", "pixels?size=16", "--per-class", "24", "--val-fraction", "0.6", "--no-cache"]
    alone, fused = tmp_path / "alone", tmp_path / "fused-ref"
    sources = ["--data", str(data), "--data", str(data_b)]  # two: the referee's veto is cut on a source held out
    assert train([*sources, "--method", "linear", "--out", str(alone), *first]).exit_code == 0
    opts = ["--set", "experts=clip,native", "--set", "clip.backbone=pixels?size=16", "--set", "cuts=first",
            "--set", "native.backbone=pixels?size=8", "--set", "native.domain=0:", "--set", "native.veto=0.3"]
    r = train([*sources, "--method", "fusion", "--out", str(fused), *first, *opts])
    assert r.exit_code == 0, r.output
    assert "out-of-source scores" in r.output  # the veto's: each source scored by a referee head without it
    a, f = load_detector(alone), load_detector(fused)
    meta = f.metadata
    assert meta["experts"]["native"]["role"] == "referee" and meta["experts"]["clip"]["role"] == "voter"
    cut, veto = meta["fit"]["referee_cuts"]["native"], meta["fit"]["referee_vetoes"]["native"]
    assert cut is not None and f.head.experts[1]["cut"] == pytest.approx(cut)
    assert veto is not None and veto <= cut and f.head.experts[1]["veto"] == pytest.approx(veto)
    rng = np.random.default_rng(4)
    images = [_noise(rng, 48, up) for up in (False, True) * 40]
    f.every_expert = True  # the referee's score on every image
    ra, rf = a.predict(images), f.predict(images)
    np.testing.assert_allclose([r.score for r in rf], [r.score for r in ra], rtol=1e-5, atol=1e-6)
    assert f.head.experts[1]["objects"] == "fake"  # the preset: it guards against false "fake" verdicts
    objections = [res.experts["native"] < cut and res.score >= f.threshold for res in rf]
    assert 0 < sum(objections) < len(objections)  # both kinds of image are checked
    # these noise images sit above the veto learnt from the run's fakes: a veto between the objections'
    # scores, written into the folder as data, makes both kinds of objection
    objecting = sorted(res.experts["native"] for res, o in zip(rf, objections) if o)
    assert len(objecting) >= 2
    veto = (objecting[0] + objecting[1]) / 2
    doc = json.loads((fused / "detector.json").read_text())
    doc["head"]["experts"][1]["veto"] = veto
    (fused / "detector.json").write_text(json.dumps(doc))
    f = load_detector(fused)
    f.every_expert = True
    rf = f.predict(images)
    vetoes = [o and res.experts["native"] < veto for o, res in zip(objections, rf)]
    assert any(vetoes) and not all(v for v, o in zip(vetoes, objections) if o)  # both kinds of objection
    for res, objects, vetoed in zip(rf, objections, vetoes):
        # each verdict follows the referee: "real" under its veto, else uncertain exactly where it objects
        if vetoed and not res.reason.startswith("unfamiliar"):
            assert (res.label, res.reason) == ("real", REFEREE_VETO)
        elif objects:
            assert res.label == "uncertain" and res.reason.startswith(("experts disagree", "unfamiliar"))
        else:
            assert res.reason is None or not res.reason.startswith(("experts disagree", "referee"))
    # a scan asks a referee that objects only to "fake" only where the voters say fake: the same
    # scores, verdicts and reasons, the referee run on those images alone
    f.every_expert = False
    runs = _count_rows(f.backbone.parts[1])
    lazy = f.predict(images)
    assert [(r.score, r.label, r.reason) for r in lazy] == [(r.score, r.label, r.reason) for r in rf]
    called_fake = [r.score >= f.threshold for r in rf]
    assert 0 < sum(called_fake) < len(images) and sum(runs) == sum(called_fake)
    assert [r.experts["native"] is not None for r in lazy] == called_fake
    for r, e in zip(lazy, rf):
        if r.experts["native"] is not None:
            assert r.experts["native"] == pytest.approx(e.experts["native"], rel=1e-5)
    # a scan's items leave the referee's input unread (zeros) until an image needs it; a file changed
    # between the two reads gets no referee score and keeps its batch-mates' results
    from fakescope.data.samples import Sample
    from fakescope.pipeline import prepare
    files = []
    for i, im in enumerate(images):
        files.append(tmp_path / f"img{i:02d}.png")
        Image.fromarray(im).save(files[-1])
    items = [f.prepare_item(Sample(path=str(x))) for x in files]
    part = slice(f.backbone._starts[1], f.backbone._starts[2])
    full = prepare(Sample(path=str(files[0])), f.spec)[0]
    assert full.deferred == () and full.array[part].any()
    from fakescope.pipeline import stack
    assert all(it.deferred == (1,) and it.holes == ((part.start, part.stop - part.start),)
               and it.array.size == full.array.size - (part.stop - part.start) for it in items)  # not held
    stacked = stack(items)
    assert stacked.shape == (len(items), full.array.size) and not stacked[:, part].any()  # zeros until read
    np.testing.assert_array_equal(np.delete(stacked[0], np.arange(part.start, part.stop)), items[0].array)
    assert [(r.score, r.label, r.reason) for r in f.predict_batch(items)] == [(r.score, r.label, r.reason) for r in rf]
    accused = called_fake.index(True)
    items = [f.prepare_item(Sample(path=str(x))) for x in files]
    Image.fromarray(images[accused][::-1].copy()).save(files[accused])  # the file changes after its first read
    again = f.predict_batch(items)
    assert again[accused].score == rf[accused].score and again[accused].experts["native"] is None
    assert [(r.score, r.label) for i, r in enumerate(again) if i != accused] == \
        [(r.score, r.label) for i, r in enumerate(rf) if i != accused]
    # the same through `fakescope scan`, and `--every-expert` gives the referee's score on every line
    folder = tmp_path / "scan-these"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    lines = {}
    for flag in ([], ["--every-expert"]):
        out = tmp_path / f"scan{len(flag)}.jsonl"
        r = CliRunner().invoke(app, ["scan", str(folder), "--model", str(fused), "--out", str(out), "--no-table",
                                     "--provenance", "off", *flag], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        lines[bool(flag)] = sorted((json.loads(x) for x in out.read_text().splitlines()), key=lambda d: d["path"])
    assert [(d["score"], d["label"], d["reason"]) for d in lines[False]] == \
        [(d["score"], d["label"], d["reason"]) for d in lines[True]]
    assert any(d["reason"] == REFEREE_VETO and d["label"] == "real" for d in lines[False])
    assert [d["experts"]["native"] is not None for d in lines[False]] == [d["score"] >= d["threshold"] for d in lines[False]]
    assert all(d["experts"]["native"] is not None for d in lines[True])
    # what `fakescope validate --scores` keeps of a fold: each expert's score and the referee's cut
    from fakescope.data.sources import load_labelled
    from fakescope.evaluation.protocols import fold_arrays
    from fakescope.evaluation.report import evaluate_detector
    m = evaluate_detector(f, list(load_labelled(str(data))), None, intervals=False)
    arrays = fold_arrays(f, m)
    assert float(arrays["cut.native"]) == pytest.approx(cut)
    fake = arrays["scores"].astype(np.float32) >= f.threshold  # as the detector compares its float32 scores
    objects = (arrays["expert.native"] < cut) & fake
    assert objects.any()
    assert float(arrays["veto.native"]) == pytest.approx(veto)
    vetoed = objects & (arrays["expert.native"] < veto) & (arrays["verdicts"] == "real")
    assert vetoed.any() and all(arrays["reasons"][vetoed] == "")  # a veto is an answer: no "uncertain" reason
    assert [r.startswith("experts disagree") for r in arrays["reasons"]] == \
        [bool(o) and not v and not r.startswith("unfamiliar") for o, v, r in zip(objects, vetoed, arrays["reasons"])]
    assert m["selective"]["vetoed"] == pytest.approx(vetoed.mean())
    doc = json.loads((fused / "detector.json").read_text())
    for bad in ({"cut": "0.5"}, {"cut": True}, {"role": "judge"}, {"objects": "real"}, {"veto": "0.1"},
                {"veto": 0.01, "cut": None}):
        broken = json.loads(json.dumps(doc))
        broken["head"]["experts"][1].update(bad)
        (fused / "detector.json").write_text(json.dumps(broken))
        with pytest.raises(ModelFolderError):
            load_detector(fused)


def test_a_referee_veto_is_cut_on_the_fakes_of_sources_its_head_never_saw():
    from fakescope.heads.fusion import FusionHead
    from fakescope.training.fusion import referee_veto
    head = FusionHead(experts=[{"name": "voter", "dim": 1, "domain": [0, None]},
                               {"name": "ref", "dim": 1, "domain": [64, None], "role": "referee", "cut": 0.3}], heads=[])
    rng = np.random.default_rng(0)
    # two sources' fakes as a head that never saw them scores them, and one source of reals only
    a, b, reals = rng.uniform(0.2, 1.0, 200), rng.uniform(0.0, 1.0, 100), rng.uniform(0.0, 0.3, 50)
    unseen = (np.r_[np.ones(300, int), np.zeros(50, int)], np.r_[a, b, reals], np.array(["a"] * 200 + ["b"] * 100 + ["r"] * 50))
    got = referee_veto(unseen, head, "ref", 0.05)
    # each source's own 5% of fakes (never above the cut), averaged: a source with many fakes weighs no more
    assert got == pytest.approx((min(np.quantile(a, 0.05), 0.3) + min(np.quantile(b, 0.05), 0.3)) / 2)
    assert referee_veto(unseen, head, "ref", 0.9) == 0.3  # at most the cut
    assert referee_veto(None, head, "ref", 0.05) is None  # one source: nothing was scored unseen
    head.experts[1]["cut"] = None
    assert referee_veto(unseen, head, "ref", 0.05) is None


def test_referee_options_are_checked():
    from fakescope.training.fit import TrainConfig
    from fakescope.training.fusion import expert_configs, expert_role
    cfg = TrainConfig(data=["x"], method="fusion")
    options = {"experts": "clip,native", "native.objects": "both"}
    assert [name for name, *_ in expert_configs(cfg, options)] == ["clip", "native"]
    assert expert_role("native", options) == "referee" and expert_role("clip", options) == "voter"
    assert expert_configs(cfg, options)[1][1].head_options == {}  # its role options are not the head's
    for bad in ({"native.objects": "real"}, {"native.role": "judge"}, {"native.veto": "0.5"}, {"native.veto": "some"},
                {"native.veto": "-0.1"}):
        with pytest.raises(ValueError, match="must be"):
            expert_configs(cfg, {"experts": "clip,native", **bad})
