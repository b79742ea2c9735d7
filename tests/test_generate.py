"""`fakescope build fakes|inpaint|coco-captions` on tiny random diffusers pipelines, offline.

The pipelines are built from small configs (a tiny UNet, VAE and CLIP text encoder, and a CLIP BPE
tokenizer written from a vocab.json/merges.txt here), saved with save_pretrained and loaded back
through the real `from_pretrained` path, as diffusers' own tests do. They draw noise, fast.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import app  # noqa: E402
from fakescope.evaluation.format_guard import FormatShortcutWarning, estimate_jpeg_quality  # noqa: E402
from fakescope.generate.commands import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE  # noqa: E402
from fakescope.generate.fakes import GenerateBatch, build_fakes, item_seed, read_captions  # noqa: E402
from fakescope.generate.spec import parse_generator  # noqa: E402
from fakescope.generate.tiny import save_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread", "offline")

CAPTIONS = {"p0": ["a photo of a cat", "a red car"], "p1": ["the dog on the sofa", "a painting of a landscape"],
            "p2": ["a portrait, highly detailed", "a fantasy castle"]}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def pipes(tmp_path_factory):
    """(text-to-image dir, inpainting dir) of tiny random Stable Diffusion pipelines."""
    d = tmp_path_factory.mktemp("pipes")
    return str(save_tiny_pipeline(d / "t2i", "text2img")), str(save_tiny_pipeline(d / "inp", "inpaint"))


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """Three real 40x40 PNG photos and a captions manifest in both COCO shapes: a captions list
    per image (p0, p2) and one row per caption (p1)."""
    d = tmp_path_factory.mktemp("parents")
    (d / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in CAPTIONS:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "imgs" / f"{name}.png")
    rows = [{"id": "p0", "image": "imgs/p0.png", "captions": CAPTIONS["p0"]}]
    rows += [{"image_id": "p1", "file_name": "imgs/p1.png", "caption": c} for c in CAPTIONS["p1"]]
    rows += [{"id": "p2", "image": "imgs/p2.png", "captions": CAPTIONS["p2"]}]
    (d / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def manifest(out) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x.strip()]


def build_args(pipes, parents, out, *extra):
    t2i = pipes[0]
    return ["build", "fakes", "--captions", parents / "captions.jsonl", "-g", f"a={t2i}?steps=2",
            "-g", f"b={t2i}?steps=2&guidance=3", "--out", out, "--size", 32, "--batch-size", 4, *extra]


# ---------------------------------------------------------------- specs and captions
def test_generator_specs():
    s = parse_generator("sd14=CompVis/stable-diffusion-v1-4?steps=30&guidance=7.5&size=512")
    assert (s.name, s.ref, s.steps, s.guidance, s.width, s.height) == ("sd14", "CompVis/stable-diffusion-v1-4", 30, 7.5, 512, 512)
    a = parse_generator("sdxl")  # an alias: hub id and native size
    assert a.ref == "stabilityai/stable-diffusion-xl-base-1.0" and a.width is None and a.name == "sdxl"
    assert parse_generator("sdxl").with_defaults(size=768).width == 768  # --size applies to aliases
    assert parse_generator("sd2-inpaint").kind == "inpaint"
    loc = parse_generator("/models/My Model/?negative=blurry+photo&width=64&height=32&dtype=fp16")
    assert loc.name == "my_model" and (loc.width, loc.height) == (64, 32) and loc.negative == "blurry photo"
    assert parse_generator(str(s)) == s  # str() round-trips
    filled = parse_generator("x=dir?steps=5").with_defaults(size=64, steps=9, guidance=2.0)
    assert (filled.steps, filled.width, filled.guidance) == (5, 64, 2.0)  # the spec's own value wins
    assert parse_generator("x=dir").with_defaults().steps == 30
    for bad in ("x=dir?stepz=3", "x=dir?steps=many", "x=dir?kind=video", "x=dir?size=30", "=?steps=2"):
        with pytest.raises(ValueError):
            parse_generator(bad)


def test_captions_manifest_and_coco_converter(parents, tmp_path):
    got = read_captions(parents / "captions.jsonl")
    assert [p.id for p in got] == ["p0", "p1", "p2"]
    assert {p.id: p.captions for p in got} == CAPTIONS
    assert all(os.path.isfile(p.path) for p in got)
    coco = {"images": [{"id": 7, "file_name": "p2.png"}, {"id": 3, "file_name": "p0.png"}, {"id": 9, "file_name": "none.png"}],
            "annotations": [{"id": 1, "image_id": 3, "caption": "a cat "}, {"id": 2, "image_id": 7, "caption": "a castle"},
                            {"id": 3, "image_id": 3, "caption": "a red car"}]}
    (tmp_path / "captions_val2017.json").write_text(json.dumps(coco))
    res = run("build", "coco-captions", tmp_path / "captions_val2017.json", parents / "imgs",
              "--out", tmp_path / "m" / "coco.jsonl")
    assert res.exit_code == 0, res.output
    ps = read_captions(tmp_path / "m" / "coco.jsonl")
    assert [(p.id, p.captions) for p in ps] == [("p0", ["a cat", "a red car"]), ("p2", ["a castle"])]
    assert os.path.samefile(ps[0].path, parents / "imgs" / "p0.png")


# ---------------------------------------------------------------- build fakes
@pytest.fixture(scope="module")
def built(pipes, parents, tmp_path_factory):
    """3 parents x 2 captions x 2 generators, built once through the CLI."""
    out = tmp_path_factory.mktemp("fakes") / "out"
    res = run(*build_args(pipes, parents, out))
    assert res.exit_code == EXIT_OK, res.output
    return out


def test_manifest_links_every_fake_to_its_parent(built, parents, pipes):
    recs = manifest(built)
    assert len(recs) == 12 and len({r["key"] for r in recs}) == 12
    real_paths = {p.id: p.path for p in read_captions(parents / "captions.jsonl")}
    for r in recs:
        assert r["label"] == "fake" and r["generator"] in ("a", "b")
        assert r["caption"] == CAPTIONS[r["parent"]][r["caption_index"]]
        assert r["parent_path"] == real_paths[r["parent"]]
        assert r["seed"] == item_seed(0, r["parent"], r["caption_index"], r["generator"])
        assert (r["steps"], r["width"], r["height"], r["format"], r["model"]) == (2, 32, 32, "png", pipes[0])
        assert r["guidance"] == (3.0 if r["generator"] == "b" else 7.5)  # b's own; a: the pipeline default
        assert r["path"] == f"fake/{r['generator']}/{r['parent']}_c{r['caption_index']}.png"
        with Image.open(built / r["path"]) as im:
            assert (im.format, im.size) == ("PNG", (32, 32))
    assert len({r["seed"] for r in recs}) == 12
    pairs = {(r["parent"], r["caption_index"], r["generator"]) for r in recs}
    assert pairs == {(p, k, g) for p in CAPTIONS for k in range(2) for g in "ab"}
    # the manifest is a training source as it is
    from fakescope.data.samples import FAKE
    from fakescope.data.sources import load_labelled
    samples = list(load_labelled(str(built / "manifest.jsonl")))
    assert len(samples) == 12 and all(s.label == FAKE and s.generator in ("a", "b") and s.text for s in samples)
    info = json.loads((built / "build.json").read_text())
    assert [g["name"] for g in info["generators"]] == ["a", "b"]


@pytest.mark.slow  # runs the diffusers pipelines again (test_manifest_links_every_fake_to_its_parent is the fast build check)
def test_same_seed_same_bytes_in_a_fresh_folder(built, pipes, parents, tmp_path):
    out = tmp_path / "again"
    res = run(*build_args(pipes, parents, out, "--batch-size", 3))  # other batches: same images
    assert res.exit_code == EXIT_OK, res.output
    for r in manifest(built):
        assert (out / r["path"]).read_bytes() == (built / r["path"]).read_bytes(), r["path"]
    other = tmp_path / "seed1"
    assert run(*build_args(pipes, parents, other, "--seed", 1, "--limit", 1)).exit_code == EXIT_OK
    r0 = next(r for r in manifest(other) if r["key"] == "a/p0_c0")
    assert r0["seed"] != item_seed(0, "p0", 0, "a")
    assert (other / r0["path"]).read_bytes() != (built / r0["path"]).read_bytes()


@pytest.mark.slow  # runs the diffusers pipelines again (test_manifest_links_every_fake_to_its_parent is the fast build check)
def test_resume_skips_done_items_and_drops_a_torn_line(built, pipes, parents, tmp_path):
    out = tmp_path / "resume"
    res = run(*build_args(pipes, parents, out, "--max-new", 5))
    assert res.exit_code == EXIT_OK, res.output
    first = manifest(out)
    assert len(first) == 5
    stamps = {r["path"]: ((out / r["path"]).stat().st_mtime_ns, (out / r["path"]).read_bytes()) for r in first}
    with open(out / "manifest.jsonl", "a") as f:  # a kill in the middle of a line
        f.write('{"key": "b/p2_c1", "path": "fake/b/p2_')
    res = run(*build_args(pipes, parents, out))
    assert res.exit_code == EXIT_OK, res.output
    assert "resuming: 5 of 12" in res.output
    recs = manifest(out)
    assert len(recs) == 12 and len({r["key"] for r in recs}) == 12  # no duplicates, torn line gone
    for path, (mtime, data) in stamps.items():  # done files untouched
        assert (out / path).stat().st_mtime_ns == mtime and (out / path).read_bytes() == data
    for r in recs:  # and the set is the one an uninterrupted build makes
        assert (out / r["path"]).read_bytes() == (built / r["path"]).read_bytes()
    res = run(*build_args(pipes, parents, out))  # nothing left to do
    assert res.exit_code == EXIT_OK and len(manifest(out)) == 12
    # other settings under the same generator name and folder are refused
    res = run("build", "fakes", "--captions", parents / "captions.jsonl", "-g", f"a={pipes[0]}?steps=3",
              "--out", out, "--size", 32)
    assert res.exit_code == EXIT_USAGE and "other settings" in res.output


@pytest.mark.slow  # runs the diffusers pipelines again (test_manifest_links_every_fake_to_its_parent is the fast build check)
def test_formats_sizes_and_the_format_warning(pipes, parents, tmp_path):
    args = ["--captions", parents / "captions.jsonl", "-g", f"t={pipes[0]}?steps=2", "--size", 48,
            "--format", "jpeg", "--quality", 90, "--max-captions", 1, "--batch-size", 3]
    out = tmp_path / "jpeg_reals"
    res = run("build", "fakes", *args, "--out", out, "--reals")
    assert res.exit_code == EXIT_OK, res.output
    recs = manifest(out)
    fakes = [r for r in recs if r["label"] == "fake"]
    reals = [r for r in recs if r["label"] == "real"]
    assert len(fakes) == 3 and len(reals) == 3
    for r in recs:
        assert r["path"].endswith(".jpg") and r["format"] == "jpeg" and r["quality"] == 90
        with Image.open(out / r["path"]) as im:
            assert im.format == "JPEG" and estimate_jpeg_quality(im.quantization[0]) == 90
            assert im.size == ((48, 48) if r["label"] == "fake" else (40, 40))
    assert {r["parent"]: r["captions"] for r in reals} == CAPTIONS
    assert "warning" not in res.output  # reals re-encoded like the fakes: no shortcut
    # PNG parents against JPEG fakes: warned, before and after generating
    with pytest.warns(FormatShortcutWarning, match="mostly PNG"):
        rep = build_fakes(parents / "captions.jsonl", [f"t={pipes[0]}?steps=2"], tmp_path / "jpeg_only", fmt="jpeg",
                          size=48, max_captions=1, log=lambda m: None)
    assert rep.written == 3 and any("file format" in w for w in rep.warnings)
    assert any("mostly PNG" in n for n in rep.notes)
    # --real-crop makes the reals the fakes' size
    out = tmp_path / "cropped"
    res = run("build", "fakes", *args, "--out", out, "--reals", "--real-crop", "--limit", 1)
    assert res.exit_code == EXIT_OK, res.output
    real = next(r for r in manifest(out) if r["label"] == "real")
    assert (real["width"], real["height"]) == (48, 48)


def test_dry_run_and_usage_errors(pipes, parents, tmp_path):
    res = run(*build_args(pipes, parents, tmp_path / "dry", "--dry-run"))
    assert res.exit_code == EXIT_OK, res.output
    assert "UNet steps" in res.output and not (tmp_path / "dry" / "manifest.jsonl").exists()
    # an inpainting checkpoint cannot make text-to-image fakes
    res = run("build", "fakes", "--captions", parents / "captions.jsonl", "-g", f"i={pipes[1]}", "--out", tmp_path / "x")
    assert res.exit_code == EXIT_USAGE and "inpainting" in res.output
    res = run("build", "fakes", "--captions", parents / "captions.jsonl", "-g", "x=dir?bogus=1", "--out", tmp_path / "x")
    assert res.exit_code == EXIT_USAGE


class _FakeOutput:
    def __init__(self, images, flags):
        self.images, self.nsfw_content_detected = images, flags


class _FlaggingPipe:
    """Stands in for a pipeline whose safety checker flags every second image."""

    def __call__(self, prompt, generator, num_inference_steps, **kw):
        n = len(prompt)
        return _FakeOutput([Image.new("RGB", (40, 40), (i * 40, 0, 0)) for i in range(n)], [i % 2 == 1 for i in range(n)])


def test_filtered_and_failed_items_are_reported_not_fatal(parents, tmp_path):
    calls = []

    def flagging(spec, task, safety_checker=True):
        calls.append(safety_checker)
        return _FlaggingPipe()

    gen = "f=/nowhere?steps=2"
    rep = build_fakes(parents / "captions.jsonl", [gen], tmp_path / "nsfw", batch_size=2, loader=flagging,
                      safety_checker=True, log=lambda m: None)
    assert (rep.written, rep.failed) == (3, 3) and calls == [True]
    errs = [json.loads(x) for x in (tmp_path / "nsfw" / "errors.jsonl").read_text().splitlines()]
    assert len(errs) == 3 and all(e["error"].startswith("nsfw_filtered") for e in errs)
    assert len(manifest(tmp_path / "nsfw")) == 3
    rep = build_fakes(parents / "captions.jsonl", [gen], tmp_path / "nsfw", batch_size=2, loader=flagging,
                      log=lambda m: None)
    assert (rep.written, rep.skipped, rep.failed) == (0, 3, 0)  # filtered items are not retried

    def broken(spec, task, safety_checker=True):
        raise RuntimeError("CUDA out of memory")

    res_dir = tmp_path / "broken"
    rep = build_fakes(parents / "captions.jsonl", [gen], res_dir, loader=broken, log=lambda m: None)
    assert rep.written == 0 and rep.failed == 6
    assert all("generation_failed: RuntimeError" in e for _, e in rep.errors)


def test_batch_callable_is_picklable_and_self_contained(pipes, tmp_path):
    """The Ray contract: a dict of arrays in, a dict of arrays out; the pipeline is not pickled."""
    from fakescope.generate.engine import iter_results, to_columns

    w = GenerateBatch(f"a={pipes[0]}?steps=2&size=32", {"out_dir": str(tmp_path), "format": "png"})
    items = [{"key": "a/x_c0", "path": "fake/a/x_c0.png", "generator": "a", "parent": "x", "parent_path": None,
              "caption": "a cat", "caption_index": 0, "seed": 5}]
    out1 = w(to_columns(items))
    blob = pickle.dumps(w)
    assert len(blob) < 10_000  # spec + options only
    w2 = pickle.loads(blob)
    first = (tmp_path / "fake/a/x_c0.png").read_bytes()
    out2 = w2(to_columns(items))
    assert (tmp_path / "fake/a/x_c0.png").read_bytes() == first
    (k1, e1, r1), (k2, e2, r2) = next(iter_results(out1)), next(iter_results(out2))
    assert (k1, e1) == (k2, e2) == ("a/x_c0", "") and r1 == r2 and r1["seed"] == 5


# ---------------------------------------------------------------- build inpaint
def triplets(out) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))


def check_triplets(out, rows, paste_back=True):
    for row in rows:
        real = np.asarray(Image.open(out / row["real"]))
        fake = np.asarray(Image.open(out / row["fake"]))
        with Image.open(out / row["mask"]) as m:
            assert m.mode == "L"
            mask = np.asarray(m)
        stem = os.path.splitext(os.path.basename(row["real"]))[0]
        k = os.path.splitext(os.path.basename(row["fake"]))[0]
        assert k == os.path.splitext(os.path.basename(row["mask"]))[0] and k.rsplit("_", 1)[0] == stem
        assert real.shape == fake.shape and mask.shape == real.shape[:2]
        assert (int(row["width"]), int(row["height"])) == (real.shape[1], real.shape[0])
        assert set(np.unique(mask)) == {0, 255}  # binary and not empty
        inside = mask > 0
        assert abs(inside.mean() - float(row["area"])) < 1e-3
        assert (fake[inside] != real[inside]).any()
        if paste_back:
            assert (fake[~inside] == real[~inside]).all()  # outside the mask: the real, bit for bit
        else:
            assert (fake[~inside] != real[~inside]).any()


@pytest.mark.slow  # runs the diffusers pipelines again (test_manifest_links_every_fake_to_its_parent is the fast build check)
def test_inpaint_auto_masks(pipes, parents, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for f in (parents / "imgs").iterdir():
        (imgs / f.name).write_bytes(f.read_bytes())
    Image.fromarray(np.zeros((30, 52, 3), np.uint8) + 90).save(imgs / "wide.png")
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "inp"
    res = run("build", "inpaint", "--images", imgs, "--masks", "auto", "-g", f"sdi={pipes[1]}?steps=2", "--out", out,
              "--per-image", 2, "--size", 48, "--prompt", "a cat", "--batch-size", 3)
    assert res.exit_code == EXIT_SOME_FAILED, res.output  # the broken image: reported, the rest built
    rows = triplets(out)
    assert len(rows) == 8 and {r["generator"] for r in rows} == {"sdi"}
    assert all(r["prompt"] == "a cat" and r["paste_back"] == "1" and r["mask_source"] == "auto" for r in rows)
    assert {r["mask_kind"] for r in rows} <= {"box", "ellipse", "strokes"}
    check_triplets(out, rows)
    wide = next(r for r in rows if r["real"] == "real/wide.png")
    assert (wide["width"], wide["height"]) == ("48", "24")  # aspect kept, multiples of 8
    errs = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["key"] for e in errs) == ["fake/sdi/broken_0.png", "fake/sdi/broken_1.png"]
    assert all(e["error"].startswith(("truncated", "not_an_image")) for e in errs)
    # the localisation loader reads the folder directly
    from fakescope.data.pairs import load_pairs
    pairs = load_pairs(out)
    edited = [p for p in pairs if p.label == 1]
    assert len(edited) == 8 and all(p.mask.shape == np.asarray(Image.open(p.image)).shape[:2] for p in edited)
    assert all(p.mask.any() for p in edited)
    # resume: nothing to redo (the broken image is retried and fails again)
    before = {r["fake"]: (out / r["fake"]).stat().st_mtime_ns for r in rows}
    res = run("build", "inpaint", "--images", imgs, "-g", f"sdi={pipes[1]}?steps=2", "--out", out,
              "--per-image", 2, "--size", 48, "--prompt", "a cat")
    assert res.exit_code == EXIT_SOME_FAILED and "resuming: 8 of 10" in res.output
    assert triplets(out) == rows and before == {r["fake"]: (out / r["fake"]).stat().st_mtime_ns for r in rows}
    # without paste-back the whole image is re-synthesised
    out2 = tmp_path / "nopaste"
    res = run("build", "inpaint", "--images", parents / "imgs", "-g", f"sdi={pipes[1]}?steps=2", "--out", out2,
              "--size", 48, "--no-paste-back", "--limit", 2)
    assert res.exit_code == EXIT_OK, res.output
    rows2 = triplets(out2)
    assert len(rows2) == 2 and all(r["paste_back"] == "0" for r in rows2)
    check_triplets(out2, rows2, paste_back=False)
    same = {r["mask"] for r in rows2} & {r["mask"] for r in rows}
    for m in same:  # the masks depend on the image, k and seed only
        assert (out2 / m).read_bytes() == (out / m).read_bytes()


@pytest.mark.slow  # runs the diffusers pipelines again (test_manifest_links_every_fake_to_its_parent is the fast build check)
def test_inpaint_mask_folder_captions_and_jpeg(pipes, parents, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    m0 = np.zeros((40, 40), np.uint8)
    m0[5:20, 8:30] = 255
    Image.fromarray(m0).save(masks / "p0.png")
    m1 = np.zeros((20, 20), np.uint8)  # another size: resized (nearest) to the working size
    m1[10:, :10] = 200
    Image.fromarray(m1).save(masks / "p1_mask.png")
    caps = tmp_path / "caps.csv"
    caps.write_text("id,caption\np0,a cat on a mat\np1,a dog\np1,a bird\n")
    out = tmp_path / "dir_masks"
    # a text-to-image checkpoint used for inpainting (legacy latent-blending inpainting, 4-channel UNet)
    res = run("build", "inpaint", "--images", parents / "imgs", "--masks", masks, "-g", f"legacy={pipes[0]}?steps=2",
              "--out", out, "--per-image", 2, "--size", 40, "--captions", caps, "--format", "jpeg", "--quality", 92)
    assert res.exit_code == EXIT_SOME_FAILED, res.output  # p2 has no mask: reported per item
    rows = triplets(out)
    assert len(rows) == 4 and all(r["mask_source"].startswith(str(masks)) for r in rows)
    assert all(r["pipeline"] == "StableDiffusionInpaintPipeline" and r["format"] == "jpeg" for r in rows)
    prompts = {os.path.basename(r["fake"]): r["prompt"] for r in rows}
    assert prompts == {"p0_0.jpg": "a cat on a mat", "p0_1.jpg": "a cat on a mat", "p1_0.jpg": "a dog", "p1_1.jpg": "a bird"}
    for r in rows:
        mask = np.asarray(Image.open(out / r["mask"]))
        want = m0 if r["real"].startswith("real/p0") else np.asarray(Image.fromarray(m1).resize((40, 40), Image.NEAREST))
        assert ((mask > 0) == (want > 127)).all()
        for col in ("real", "fake"):
            with Image.open(out / r[col]) as im:
                assert im.format == "JPEG" and im.size == (40, 40) and estimate_jpeg_quality(im.quantization[0]) == 92
    errs = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["key"] for e in errs} == {"fake/legacy/p2_0.jpg", "fake/legacy/p2_1.jpg"}
    assert all(e["error"].startswith("missing_mask") for e in errs)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FAKESCOPE_TEST_RAY"), reason="starts a local Ray (~1 min): FAKESCOPE_TEST_RAY=1")
def test_ray_engine_writes_what_the_local_engine_writes(built, pipes, parents, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    res = run(*build_args(pipes, parents, out, "--engine", "ray", "--ray-actors", 1, "--limit", 2))
    assert res.exit_code == EXIT_OK, res.output
    recs = manifest(out)
    assert len(recs) == 8
    for r in recs:
        assert (out / r["path"]).read_bytes() == (built / r["path"]).read_bytes()
    # inpainting through Ray: the same triplets as in this process
    args = ["build", "inpaint", "--images", parents / "imgs", "-g", f"sdi={pipes[1]}?steps=2", "--size", 40, "--limit", 2]
    assert run(*args, "--out", tmp_path / "inp_local").exit_code == EXIT_OK
    res = run(*args, "--out", tmp_path / "inp_ray", "--engine", "ray", "--ray-actors", 1)
    assert res.exit_code == EXIT_OK, res.output
    rows = triplets(tmp_path / "inp_ray")
    assert len(rows) == 2 and rows == triplets(tmp_path / "inp_local")
    for r in rows:
        for col in ("real", "fake", "mask"):
            assert (tmp_path / "inp_ray" / r[col]).read_bytes() == (tmp_path / "inp_local" / r[col]).read_bytes()
