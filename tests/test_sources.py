"""One reader for every command (data/sources.py) and one split by group (data/splits.py).

Tiny fixtures are built here: COCOFake-, GenImage- and Synthbuster-style folders, a CocoGlide
tar, and a tiny random DINOv2 for the commands that need a model.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from fakescope.data.samples import FAKE, REAL, UNKNOWN
from fakescope.data.sources import load_labelled, read_reals, read_source
from fakescope.data.splits import HEAD_SPLIT, fold_of, key_hash, split_by_group, split_samples
from fakescope.scale.inputs import enumerate_inputs


def _img(path, seed: int = 0, noisy: bool = False):
    """A smooth gradient (real-looking) or high-frequency noise (fake-looking), 40x40."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if noisy:
        px = np.clip(rng.integers(60, 200, 3) + rng.integers(-60, 61, (40, 40, 3)), 0, 255)
    else:
        yy, xx = np.mgrid[0:40, 0:40] / 39.0
        a, b = rng.random((2, 3))
        px = (a * xx[..., None] + b * yy[..., None]) / 2 * 255
    Image.fromarray(px.astype(np.uint8)).save(path)


def cocofake(root, parents: int = 12, children: int = 3):
    """COCOFake as released: fakes in <split>/<image id>/<k>.png, the COCO parents elsewhere."""
    for p in range(parents):
        stem = f"COCO_val2014_{p:012d}"
        _img(root / "coco" / "val2014" / f"{stem}.jpg", seed=p)
        for k in range(children):
            _img(root / "cocofake" / "val2014" / stem / f"{k}.png", seed=100 * p + k, noisy=True)
    return f"cocofake:{root / 'cocofake'}?coco={root / 'coco'}&split=val2014"


def genimage(root):
    for g, gen in enumerate(("adm", "glide")):
        for i in range(2):
            _img(root / gen / "val" / "ai" / f"{i}_{gen}.png", seed=10 * g + i, noisy=True)
            _img(root / gen / "val" / "nature" / f"n{g}{i}.JPEG", seed=10 * g + i)
    return f"genimage:{root}?split=val"


def synthbuster(root):
    for g, gen in enumerate(("dalle3", "firefly")):
        _img(root / "sb" / gen / "r0a.png", seed=g, noisy=True)
    _img(root / "raise1k" / "r0.png")
    return f"synthbuster:{root / 'sb'}?real={root / 'raise1k'}"


# ---------------------------------------------------------------- one reader
@pytest.mark.parametrize("make", [cocofake, genimage, synthbuster])
def test_scan_inputs_read_the_benchmark_layouts_as_training_does(tmp_path, make):
    ref = make(tmp_path)
    labelled = list(load_labelled(ref))
    rows = enumerate_inputs([ref])
    assert len(labelled) > 0
    assert rows.paths == [s.path for s in labelled]  # the same images, named the same way
    assert rows.cols["label"] == [s.label for s in labelled]
    assert rows.cols["generator"] == [s.generator for s in labelled]


def test_scan_keeps_what_training_drops_and_names_the_rest_alike(tmp_path):
    _img(tmp_path / "d" / "real" / "a.png")
    _img(tmp_path / "d" / "fake" / "sd" / "b.png", noisy=True)
    _img(tmp_path / "d" / "loose.png")  # no label: scanned, not trained on
    labelled = list(load_labelled(tmp_path / "d"))
    scanned = list(read_source(str(tmp_path / "d"), labelled=False))
    assert [(s.label, s.generator) for s in labelled] == [(FAKE, "sd"), (REAL, None)]
    assert [s.path for s in scanned if s.label != UNKNOWN] == [s.path for s in labelled]
    assert [s.path for s in scanned if s.label == UNKNOWN] == [str(tmp_path / "d" / "loose.png")]
    with pytest.raises(ValueError, match="expected a folder"):
        load_labelled(tmp_path / "d" / "loose.png")  # refused when asked, not when read
    assert [s.path for s in read_source(str(tmp_path / "missing.png"), labelled=False)] == [str(tmp_path / "missing.png")]
    (tmp_path / "m.csv").write_text("path\nd/loose.png\n")  # a manifest without labels: scan yes, train no
    assert [s.label for s in read_source(str(tmp_path / "m.csv"), labelled=False)] == [UNKNOWN]
    with pytest.raises(ValueError, match="no label"):
        list(load_labelled(tmp_path / "m.csv"))


def _cocoglide_tar(path, pairs: int = 3):
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        table = io.StringIO()
        w = csv.writer(table)
        w.writerow(["real", "fake", "mask", "prompt"])
        for i in range(pairs):
            for kind, name in (("real", f"real/cat_{i}.png"), ("fake", f"fake/glide_{i}_up.png")):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (i * 40, 0, 0) if kind == "real" else (0, i * 40, 0)).save(buf, "PNG")
                add(name, buf.getvalue())
            w.writerow([f"real/cat_{i}.png", f"fake/glide_{i}_up.png", f"mask/cat_{i}_mask.png", f"cat {i}"])
        add("table.csv", table.getvalue().encode())  # after the images, as in the shared dev.tar
    return path


def test_a_cocoglide_pair_is_one_group_in_training_and_in_scan(tmp_path):
    tar = _cocoglide_tar(tmp_path / "glide.tar")
    got = list(load_labelled(tar))
    assert [s.label for s in got] == [REAL, FAKE] * 3
    assert [s.group for s in got] == ["cat_0.png", "cat_0.png", "cat_1.png", "cat_1.png", "cat_2.png", "cat_2.png"]
    assert [s.text for s in got[:2]] == ["cat 0", "cat 0"]
    assert all(s.data for s in got)  # training reads the bytes
    scanned = list(read_source(str(tar), labelled=False, in_place=True))
    assert [s.path for s in scanned] == [s.path for s in got] and all(s.member and s.data is None for s in scanned)
    with open(tar, "rb") as f:  # located exactly: the worker reads `size` bytes at `offset`
        f.seek(scanned[1].member.offset)
        assert f.read(scanned[1].member.size) == got[1].data
    with tarfile.open(tar) as t:  # the same layout as a folder: the same captions and groups
        t.extractall(tmp_path / "folder", filter="data")
    folder = list(load_labelled(tmp_path / "folder"))
    assert sorted((s.path.rsplit("/", 2)[-2:], s.group, s.text) for s in folder) == \
        sorted((s.path.split("::")[1].split("/"), s.group, s.text) for s in got)
    held = split_samples(got * 20, 0.5, seed=3)
    keys = np.array([s.group_key() for s in got * 20])
    assert all(len(set(held[keys == k])) == 1 for k in set(keys))


def test_read_reals_takes_a_labelled_sources_reals_and_a_plain_folders_photos(tmp_path):
    _img(tmp_path / "lab" / "real" / "a.png")
    _img(tmp_path / "lab" / "fake" / "b.png", noisy=True)
    _img(tmp_path / "plain" / "c.png")
    got = read_reals([str(tmp_path / "lab"), str(tmp_path / "plain")])
    assert [(s.path.rsplit("/", 1)[-1], s.label) for s in got] == [("a.png", REAL), ("c.png", REAL)]


# ---------------------------------------------------------------- one split, by group
def test_cocofake_families_never_straddle_the_split_and_fakes_are_held_out(tmp_path):
    samples = list(load_labelled(cocofake(tmp_path, parents=40, children=4)))
    held = split_samples(samples, 0.15, seed=0)
    by_family: dict[str, set] = {}
    for s, h in zip(samples, held):
        by_family.setdefault(s.group, set()).add(bool(h))
    assert len(by_family) == 40 and all(len(sides) == 1 for sides in by_family.values())
    assert any(h and s.label == FAKE for s, h in zip(samples, held))
    assert any(h and s.label == REAL for s, h in zip(samples, held))
    # the bug this replaces: hashing bare file names puts every child 0.png..3.png in training at seed 0
    assert not any(key_hash(f"{k}.png", 0) < 0.15 for k in range(4))


def test_split_by_group_is_stable_per_key_and_keeps_both_classes_when_asked():
    groups = np.repeat(np.arange(55), 2)  # two views per image
    y = np.repeat((np.arange(55) < 5).astype(int), 2)
    plain = split_by_group(groups, 0.15, seed=0)
    assert not set(groups[plain]) & set(groups[~plain])
    # the key alone decides: a subset keeps every one of its groups where the whole put it
    sub = groups < 30
    assert (split_by_group(groups[sub], 0.15, seed=0) == plain[sub]).all()
    for seed in range(5):
        held = split_by_group(groups, 0.15, seed, labels=y, salt=HEAD_SPLIT)
        assert not set(groups[held]) & set(groups[~held])
        assert set(y[held]) == {0, 1} and set(y[~held]) == {0, 1}
    # a head's salt draws another split from the rows training kept (same seed, same keys)
    kept = groups[~plain]
    assert split_by_group(kept, 0.15, seed=0).sum() == 0
    assert 0 < split_by_group(kept, 0.15, seed=0, salt=HEAD_SPLIT).sum() < len(kept)


def test_folds_and_fractions_place_groups_by_the_same_hash():
    import hashlib
    for key in ("apple iphone xr", "0.png", "cat_0.png"):
        h = int(hashlib.sha256(f"7:{key}".encode()).hexdigest()[:8], 16)  # the hash device folds always used
        assert fold_of(key, 5, seed=7) == h % 5 and key_hash(key, 7) == h / 0xFFFFFFFF


# ---------------------------------------------------------------- the commands
torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    root = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                   image_size=32, patch_size=8)).eval().save_pretrained(root / "dino")
    (root / "dino" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    return root / "dino"


def test_train_and_scan_read_cocofake_features_reads_genimage(tmp_path, tiny_dino, monkeypatch, one_thread):
    from typer.testing import CliRunner

    from fakescope.cli import app
    from fakescope.detector import load_detector
    from fakescope.scale.outputs import read_parts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = cocofake(tmp_path / "cf")
    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    res = run("train", "--data", ref, "--backbone", f"hf-dinov2:{tiny_dino}", "--out", tmp_path / "model",
              "--no-cache", "--val-fraction", "0.25", "--no-uncertain")
    assert res.exit_code == 0, res.output
    samples = list(load_labelled(ref))
    held = split_samples(samples, 0.25, 0)
    val = load_detector(tmp_path / "model").metadata["validation"]
    assert val["n"] == held.sum() and val["fake"] == sum(h and s.label == FAKE for s, h in zip(samples, held)) > 0

    res = run("scan", ref, "--model", tmp_path / "model", "--out", tmp_path / "cf.jsonl")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "cf.jsonl").read_text().splitlines()]
    assert [r["path"] for r in recs] == [s.path for s in samples] and not any(r["error"] for r in recs)

    gi = genimage(tmp_path / "gi")
    res = run("features", gi, "--backbone", f"hf-dinov2:{tiny_dino}", "--out", tmp_path / "feat", "--no-cache")
    assert res.exit_code == 0, res.output
    table = read_parts(tmp_path / "feat", ["path", "label", "error"]).to_pydict()
    assert table["path"] == [s.path for s in load_labelled(gi)]
    assert table["label"] == [s.label for s in load_labelled(gi)] and not any(table["error"])
