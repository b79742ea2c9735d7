"""`fakescope train / scan / eval` end to end on a tiny random DINOv2 and generated images."""
from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
sk = pytest.importorskip("sklearn.metrics")

from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, app  # noqa: E402
from fakescope.detector import load_detector  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8)
PER_CLASS = 12
FIELDS = {"path", "sha256", "score", "label", "threshold", "model", "model_version", "error", "reason", "provenance"}


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth(rng) -> np.ndarray:
    """A random colour gradient: the "real" class."""
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    a, b, c = rng.random((3, 3))
    img = a[None, None] * xx[..., None] + b[None, None] * yy[..., None] + 0.3 * c[None, None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def noisy(rng) -> np.ndarray:
    """High-frequency noise over a flat colour: the "fake" class."""
    base = rng.integers(60, 200, 3)
    return np.clip(base + rng.integers(-60, 61, (48, 48, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with data/ (labelled), a tiny backbone and a trained model; the CLI runs inside it."""
    root = tmp_path_factory.mktemp("cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("FAKESCOPE_CACHE", str(root / "unused-cache"))
    mp.chdir(root)  # relative paths: the train/validation split (hashed on paths) is the same every run
    torch.manual_seed(0)
    tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval().save_pretrained(root / "dino")
    (root / "dino" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    rng = np.random.default_rng(0)
    for folder, make in (("data/real", smooth), ("data/fake/genA", noisy)):
        (root / folder).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(make(rng)).save(root / folder / f"{i:02d}.png")
    result = CliRunner().invoke(app, ["train", "--data", "data", "--backbone", "hf-dinov2:dino", "--out", "model",
                                      "--no-cache", "--val-fraction", "0.25", "--id", "tiny"])
    assert result.exit_code == 0, result.output
    yield root, result
    mp.undo()


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def records(path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_train_writes_model(work):
    root, result = work
    assert "saved model" in result.output
    assert not (root / "unused-cache").exists()  # --no-cache
    assert sorted(p.name for p in (root / "model").iterdir()) == ["README.md", "detector.json", "head.safetensors"]
    meta = json.loads((root / "model" / "detector.json").read_text())
    assert meta["id"] == "tiny" and meta["backbone"]["name"] == "hf-dinov2:dino"
    md = meta["metadata"]
    tr, va = md["train"], md["validation"]
    assert tr["n"] + va["n"] == 2 * PER_CLASS
    assert tr["real"] + va["real"] == PER_CLASS and tr["fake"] + va["fake"] == PER_CLASS
    assert va["real"] > 0 and va["fake"] > 0 and tr["real"] > 0 and tr["fake"] > 0
    assert tr["generators"] == {"genA": tr["fake"]} and va["generators"] == {"genA": va["fake"]}
    assert 0.0 <= meta["threshold"] <= 1.0
    assert md["skipped_images"] == 0 and md["data"] == ["data"]
    vm = md["validation_metrics"]
    assert vm["n"] == va["n"] and vm["threshold"] == meta["threshold"]
    assert set(vm.get("per_generator") or vm.get("per_generator_acc")) == {"genA"}
    # the threshold keeps at most target_fpr of the held-out reals above it
    assert 1 - vm["acc_real"] <= md["target_fpr"]
    assert "validation: AUC" in result.output


def _scan_folder(root):
    """Good images (two in a subfolder) plus three broken files; returns (folder, good, broken)."""
    src = root / "data" / "real"
    d = root / "scanme"
    if d.exists():
        shutil.rmtree(d)
    (d / "sub").mkdir(parents=True)
    good = []
    for i, name in enumerate(["a.png", "b.png", "sub/c.png", "sub/d.jpg"]):
        img = Image.open(src / f"{i:02d}.png")
        img.save(d / name)
        good.append(str(d / name))
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    buf = io.BytesIO()
    Image.fromarray(noisy(np.random.default_rng(5))).save(buf, "JPEG", quality=95)
    (d / "sub" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "readme.txt").write_text("not an image name: not scanned\n")
    broken = [str(d / "empty.png"), str(d / "notes.jpg"), str(d / "sub" / "cut.jpg")]
    return d, good, broken


def test_scan_mixed_folder(work):
    root, _ = work
    d, good, broken = _scan_folder(root)
    out = root / "res.jsonl"
    out.unlink(missing_ok=True)
    result = run("scan", d, "--model", "model", "--out", out)
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    recs = records(out)
    assert sorted(r["path"] for r in recs) == sorted(good + broken)  # readme.txt skipped, subfolder walked
    det = load_detector("model")
    for r in recs:
        assert set(r) == FIELDS
        assert (r["model"], r["model_version"], r["threshold"]) == ("tiny", det.version, det.threshold)
        if r["path"] in broken:
            assert r["error"] and r["score"] is None and r["label"] is None
        else:
            assert r["error"] is None and 0 <= r["score"] <= 1
            if r["label"] == "uncertain":  # a tiny model's scores can sit in its "uncertain" band
                assert r["reason"].startswith("near threshold")
            else:
                assert r["label"] == ("fake" if r["score"] >= r["threshold"] else "real")
            assert len(r["sha256"]) == 64
    by = {r["path"]: r for r in recs}
    assert by[str(d / "empty.png")]["error"].startswith("empty")
    assert by[str(d / "notes.jpg")]["error"].startswith("not_an_image")
    assert by[str(d / "sub" / "cut.jpg")]["error"].startswith("truncated")
    # scores equal the Python API's
    api = {r.path: r for r in det.predict(good)}
    for p in good:
        assert by[p]["score"] == pytest.approx(api[p].score, abs=1e-6) and by[p]["label"] == api[p].label
    assert "4 scored, 3 failed" in result.output


def test_scan_exit_codes(work):
    root, _ = work
    d, good, broken = _scan_folder(root)
    res = run("scan", *broken, "--model", "model", "--no-table")
    assert res.exit_code == EXIT_ALL_FAILED, res.output
    res = run("scan", *good, "--model", "model", "--no-table")
    assert res.exit_code == EXIT_OK, res.output
    res = run("scan", d / "sub" / "nope", "--model", "model", "--no-table")  # a missing file is an item error
    assert res.exit_code == EXIT_ALL_FAILED, res.output
    empty_dir = root / "nothing"
    empty_dir.mkdir(exist_ok=True)
    assert run("scan", empty_dir, "--model", "model").exit_code == 2


def test_scan_stdin(work):
    root, _ = work
    d, good, broken = _scan_folder(root)
    out = root / "stdin.jsonl"
    out.unlink(missing_ok=True)
    res = run("scan", "-", "--model", "model", "--out", out, "--no-table",
              input="\n".join(good[:3]) + "\n\n" + broken[0] + "\n")
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    recs = records(out)
    assert [r["path"] for r in recs] == good[:3] + broken[:1]  # in the given order


def test_scan_resume(work):
    root, _ = work
    d, good, broken = _scan_folder(root)
    inputs = good + broken
    out = root / "resume.jsonl"
    out.unlink(missing_ok=True)
    first = run("scan", d, "--model", "model", "--out", out, "--batch-size", "2", "--no-table")
    assert first.exit_code == EXIT_SOME_FAILED
    full = {r["path"]: r for r in records(out)}
    assert len(full) == len(inputs)

    lines = out.read_text().splitlines(keepends=True)
    kept = lines[:-2]
    dropped = [json.loads(x)["path"] for x in lines[-2:]]
    out.write_text("".join(kept) + '{"path": "x')  # a run killed mid-write
    n_done = sum(json.loads(x)["error"] is None for x in kept)

    second = run("scan", d, "--model", "model", "--out", out, "--batch-size", "2", "--no-table")
    assert second.exit_code == EXIT_SOME_FAILED, second.output
    assert f"resuming: {n_done} of {len(inputs)} already scored" in second.output
    recs = records(out)  # every line parses: the torn line is gone
    assert sorted(r["path"] for r in recs) == sorted(inputs)  # exactly one record per input
    assert all(set(r) == FIELDS for r in recs)
    # the scored records kept from the first run come first, untouched; only the rest was scanned again
    kept_ok = [json.loads(x) for x in kept if json.loads(x)["error"] is None]
    assert recs[:len(kept_ok)] == kept_ok
    appended = {r["path"] for r in recs[len(kept_ok):]}
    assert appended == (set(dropped) | set(broken)) - {r["path"] for r in kept_ok}
    for r in recs:
        assert r["score"] == full[r["path"]]["score"] and r["error"] == full[r["path"]]["error"]

    # a last record complete but for its newline is kept, and the next append starts on a new line
    out2 = root / "resume2.jsonl"
    out2.write_text("\n".join(json.dumps(full[p]) for p in good[:2]))
    res = run("scan", *good[:3], "--model", "model", "--out", out2, "--no-table")
    assert res.exit_code == EXIT_OK and "resuming: 2 of 3" in res.output
    assert [r["path"] for r in records(out2)] == good[:3]

    # records of another model version are kept, said so, and this version's follow them
    out3 = root / "resume3.jsonl"
    out3.write_text("".join(json.dumps({**full[p], "model_version": "0"}) + "\n" for p in good[:2]))
    res = run("scan", *good[:3], "--model", "model", "--out", out3, "--no-table")
    assert res.exit_code == EXIT_OK and "also holds 2 records of tiny@0, kept as they are" in res.output
    assert [r["model_version"] for r in records(out3)] == ["0", "0", "1", "1", "1"]

    # a complete file: nothing left to score except the failures, still one record each
    third = run("scan", d, "--model", "model", "--out", out, "--no-table")
    assert third.exit_code == EXIT_SOME_FAILED
    assert f"resuming: {len(good)} of {len(inputs)} already scored" in third.output
    assert sorted(r["path"] for r in records(out)) == sorted(inputs)


def test_eval_report(work):
    root, _ = work
    res = run("eval", "--model", "model", "--data", "data", "--report", "rep")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "rep" / "metrics.json").read_text())
    for k in ("auc", "ap", "accuracy", "acc_real", "acc_fake"):
        assert isinstance(m[k], float) and not math.isnan(m[k]) and 0 <= m[k] <= 1
    assert m["n"] == 2 * PER_CLASS and m["n_real"] == m["n_fake"] == PER_CLASS and m["errors"] == []
    assert set(m["per_generator"]) == {"genA"} and m["per_generator"]["genA"]["n"] == 2 * PER_CLASS
    assert m["model"] == "tiny@1"
    # recompute from the Python API with scikit-learn
    det = load_detector("model")
    paths = sorted(str(p) for p in (root / "data").rglob("*.png"))
    y = np.array([0 if "/real/" in p else 1 for p in paths])
    s = np.array([r.score for r in det.predict(paths)])
    assert m["auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
    assert m["ap"] == pytest.approx(sk.average_precision_score(y, s), abs=1e-9)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, s >= det.threshold), abs=1e-9)
    assert m["per_generator"]["genA"]["auc"] == pytest.approx(m["auc"])


def test_eval_robustness_and_markdown_report(work):
    root, _ = work
    res = run("eval", "--model", "model", "--data", "data", "--robustness", "--report", "rep-rob")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "rep-rob" / "metrics.json").read_text())
    names = [r["perturbation"] for r in m["robustness"]]
    assert names[0] == "clean" and {"jpeg-50", "blur-3", "resize-0.5", "crop-0.5", "noise-10"} <= set(names)
    assert all(r["n"] == 2 * PER_CLASS for r in m["robustness"])
    assert m["robustness"][0]["auc"] == pytest.approx(m["auc"])  # "clean" is the unperturbed set
    assert {"tpr_at_1fpr", "tpr_at_5fpr", "eer", "best_accuracy", "ece", "brier"} <= set(m)
    lo, hi = m["auc_ci95"]
    assert lo <= m["auc"] <= hi
    md = (root / "rep-rob" / "summary.md").read_text()
    assert "## Robustness" in md and "| jpeg-50 |" in md and "real vs genA" in md
    html = (root / "rep-rob" / "report.html").read_text()
    pngs = sorted(p.name for p in (root / "rep-rob" / "plots").glob("*.png"))
    assert pngs and all(f"plots/{name}" in html for name in pngs) and "robustness" in html.lower()
    # the risk-coverage curve: at full coverage it is the accuracy at the threshold
    rc = m["risk_coverage"]
    assert rc["coverage"][-1] == 1.0 and rc["accuracy"][-1] == pytest.approx(m["accuracy"])
    assert "risk_coverage.png" in pngs and "## Selective classification" in md
    # the two classes are PNGs of one size here: no format warning
    assert m["format_guard"] == []


def test_calibrate_writes_a_calibrated_detector(work):
    root, _ = work
    res = run("calibrate", "--model", "model", "--data", "data", "--method", "platt", "--target-fpr", "0.1",
              "--out", "model-cal")
    assert res.exit_code == 0, res.output
    meta = json.loads((root / "model-cal" / "detector.json").read_text())
    cal = meta["calibration"]
    assert cal["kind"] == "platt" and math.isfinite(cal["a"]) and math.isfinite(cal["b"])
    rep = meta["metadata"]["calibration"]
    # Platt scaling minimises log loss on these images and contains the identity map: no worse (up to its tiny L2)
    assert rep["after"]["nll"] <= rep["before"]["nll"] + 1e-2
    det = load_detector(root / "model-cal")
    reals = [str(p) for p in sorted((root / "data" / "real").glob("*.png"))]
    called_fake = np.mean([r.label == "fake" for r in det.predict(reals)])
    assert called_fake <= 0.1 + 1e-9
    res = run("eval", "--model", "model-cal", "--data", "data", "--report", "rep-cal")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "rep-cal" / "metrics.json").read_text())
    assert "ece" in m and "brier" in m and "_scores" not in m


def test_calibrate_detector_python_api_keeps_verdicts_or_hits_the_target(work):
    from fakescope.evaluation.calibrate import calibrate_detector
    from fakescope.training import load_sources
    root, _ = work
    det = load_detector(root / "model")
    samples = load_sources(["data"], None)
    paths = [s.path for s in samples]
    cal = calibrate_detector(det, samples, "temperature", data=["data"])
    assert cal.calibration["kind"] == "temperature" and det.calibration is None  # a copy; the input is unchanged
    # the threshold (and the "uncertain" band) go through the same monotone map as the scores:
    # every verdict stays, also when a calibrated detector is calibrated again
    again = calibrate_detector(cal, samples, "platt")
    labels = [r.label for r in det.predict(paths)]
    assert [r.label for r in cal.predict(paths)] == labels == [r.label for r in again.predict(paths)]
    assert cal.metadata["calibration"]["n"] == len(samples) and cal.metadata["calibration"]["data"] == ["data"]
    target = calibrate_detector(det, samples, "none", target_fpr=0.25)
    assert target.calibration is None
    reals = [s.path for s in samples if s.label == 0]
    assert np.mean([r.label == "fake" for r in target.predict(reals)]) <= 0.25
    with pytest.raises(ValueError, match="real and fake"):
        calibrate_detector(det, [s for s in samples if s.label == 0], "platt")


def test_leave_generator_out(work, tmp_path):
    root, _ = work
    rng = np.random.default_rng(3)
    (root / "data" / "fake" / "genB").mkdir(exist_ok=True)
    for i in range(PER_CLASS):
        Image.fromarray(noisy(rng)).save(root / "data" / "fake" / "genB" / f"b{i:02d}.png")
    res = run("leave-out", "--data", "data", "--backbone", "hf-dinov2:dino", "--cache", "lo-cache", "--val-fraction", "0.5",
              "--report", "lo.json")
    assert res.exit_code == 0, res.output
    out = json.loads((root / "lo.json").read_text())
    assert set(out["per_generator"]) == {"genA", "genB"}
    # tested on the images the hashed split holds out (as train holds them out), never on trained ones
    from fakescope.data.sources import load_labelled
    from fakescope.data.splits import split_samples
    samples = list(load_labelled("data"))
    held = [s for s, h in zip(samples, split_samples(samples, 0.5, 0)) if h]
    for g, m in out["per_generator"].items():
        assert m["n_real"] == sum(s.label == 0 for s in held) > 0
        assert m["n_fake"] == sum(s.generator == g for s in held) > 0
        assert 0 <= m["auc"] <= 1
    assert out["mean_auc"] == pytest.approx(np.mean([m["auc"] for m in out["per_generator"].values()]))
    assert run("leave-out", "--data", "data", "--test-source", "other").exit_code == 2
    import shutil as sh
    sh.rmtree(root / "data" / "fake" / "genB")  # leave the shared fixture as it was


def test_markdown_report_has_robustness_per_generator():
    from fakescope.evaluation.report import summary_markdown
    rob = [{"perturbation": p, "n": 10, "auc": 0.9, "ap": 0.9, "accuracy": 0.8, "acc_real": 0.9, "acc_fake": 0.7,
            "auc_by_generator": {"sdxl": a, "glide": b}} for p, a, b in (("clean", 0.95, 0.91), ("jpeg-50", 0.61, 0.88))]
    md = summary_markdown({"model": "m", "threshold": 0.5, "robustness": rob}, ["d"])
    assert "| perturbation | glide | sdxl |" in md
    assert "| jpeg-50 | 0.8800 | 0.6100 |" in md


def test_eval_on_the_models_own_held_out_images(work):
    root, _ = work
    res = run("eval", "--model", "model", "--data", "data", "--held-out", "0.25", "--report", "rep-held")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "rep-held" / "metrics.json").read_text())
    meta = json.loads((root / "model" / "detector.json").read_text())["metadata"]
    assert m["n"] == meta["validation"]["n"] < 2 * PER_CLASS  # exactly the images train held out
    assert m["auc"] == pytest.approx(meta["validation_metrics"]["auc"], abs=1e-9)
    assert run("eval", "--model", "model", "--data", "data", "--held-out", "1.5").exit_code == 2


@pytest.mark.parametrize("bad", ["augment.p_thumb=1", "augment.thumbnail_side=48", "augment.p_jpeg=often"])
def test_train_rejects_a_bad_augment_option_before_any_work(tmp_path, bad):
    """--set augment.<field>=... configures the training views: a wrong name or value is a usage
    error naming the option, not a traceback after features were extracted."""
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--set", bad, "--out", str(tmp_path / "m")])
    assert res.exit_code == 2, res.output
    assert "augment" in res.output and not (tmp_path / "m").exists()
