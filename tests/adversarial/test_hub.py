"""Detectors on the Hugging Face Hub, without a network: a populated local HF cache read with
HF_HUB_OFFLINE=1 (the download path), and `HfApi` replaced at its network boundary (the upload
path). A Hub snapshot is loaded by the same loader and checks as a local folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, edit_json, run, save_tiny_detector

hub_lib = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants as hub_constants  # noqa: E402
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, repo_id: str, files: dict[str, Path], revision: str = "main",
                   commit: str = COMMIT) -> Path:
    """The layout huggingface_hub writes: models--user--repo/{refs/<rev>, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, snap / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An offline Hugging Face cache in tmp_path (huggingface_hub reads these at import, so the
    module constants are patched too)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def model_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir()}


def test_hub_id_rule(tmp_path, monkeypatch):
    from fakescope.hub import parse_hub_id
    monkeypatch.chdir(tmp_path)
    assert parse_hub_id("user/repo") == ("user/repo", None)
    assert parse_hub_id("user/repo@v1.2") == ("user/repo", "v1.2")
    assert parse_hub_id("hf://user/my.repo@main") == ("user/my.repo", "main")
    for local in ("model", "./user/repo", "/abs/user/repo", "a/b/c", "~/x", "user/..", "../repo"):
        assert parse_hub_id(local) is None, local
    (tmp_path / "user" / "repo").mkdir(parents=True)
    assert parse_hub_id("user/repo") is None  # an existing folder wins over a look-alike id
    assert parse_hub_id("hf://user/repo") == ("user/repo", None)  # unless hf:// says otherwise


def test_detector_round_trips_through_the_hub_cache(tmp_path, hub_cache, images):
    from fakescope import load_detector

    local = save_tiny_detector(tmp_path / "model")
    card = (local / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n") and "pipeline_tag: image-classification" in card
    snap = populate_cache(hub_cache, "someone/tiny-detector", model_files(local))
    det = load_detector("someone/tiny-detector")
    assert det.id == "tiny" and det.threshold == 0.5
    img = str(sorted(images.iterdir())[0])
    assert det.predict(img)[0].score == load_detector(local).predict(img)[0].score
    # a pinned revision (a commit hash) resolves to the same snapshot
    assert load_detector(f"someone/tiny-detector@{COMMIT}").id == "tiny"
    assert (snap / "README.md").exists()


def test_scan_with_a_hub_id(tmp_path, hub_cache, images):
    local = save_tiny_detector(tmp_path / "model")
    populate_cache(hub_cache, "someone/tiny-detector", model_files(local))
    out = tmp_path / "r.jsonl"
    res = run("scan", images, "--model", "someone/tiny-detector", "--out", out, "--no-table")
    assert res.exit_code == 0, (res.output, res.stderr)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3 and {r["model"] for r in lines} == {"tiny"}


def test_a_hub_snapshot_is_checked_like_a_folder(tmp_path, hub_cache):
    """Pickle weights beside the JSON are never read; the safetensors file is what must be there,
    and a snapshot's JSON may not point outside the snapshot."""
    local = save_tiny_detector(tmp_path / "model")
    pickle = tmp_path / "pytorch_model.bin"
    pickle.write_bytes(b"\x80\x04cos\nsystem\n.")
    files = {"detector.json": local / "detector.json", "pytorch_model.bin": pickle}
    populate_cache(hub_cache, "someone/pickled", files)
    assert_one_line_error(run("scan", tmp_path, "--model", "someone/pickled"), "head.safetensors")

    bad = save_tiny_detector(tmp_path / "bad")
    edit_json(bad / "detector.json", backbone__kind="trained:", backbone__weights="../../../../elsewhere")
    populate_cache(hub_cache, "someone/escape", model_files(bad))
    assert_one_line_error(run("scan", tmp_path, "--model", "someone/escape"), "outside the model folder")


def test_missing_hub_model_offline_is_one_line(tmp_path, hub_cache, images):
    res = run("scan", images, "--model", "nobody/nothing")
    assert_one_line_error(res, "nobody/nothing", "hub")


def test_hub_download_allows_only_model_files(tmp_path, monkeypatch):
    """What is asked of snapshot_download: only JSON, safetensors and the card."""
    from fakescope import hub

    seen = {}

    def fake_download(repo_id, **kw):
        seen.update(kw, repo_id=repo_id)
        return str(tmp_path)

    monkeypatch.setattr(hub_lib, "snapshot_download", fake_download)
    assert hub.resolve_model("user/repo@v2") == tmp_path
    assert seen["repo_id"] == "user/repo" and seen["revision"] == "v2"
    assert sorted(seen["allow_patterns"]) == ["*.json", "*.safetensors", "README.md"]


def test_push_uploads_the_folder_with_its_card(tmp_path, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def upload_folder(self, **kw):
        calls["upload"] = kw
        calls["files"] = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()

    monkeypatch.setattr(hub_lib.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub_lib.HfApi, "upload_folder", upload_folder)
    local = save_tiny_detector(tmp_path / "model")
    (local / "README.md").unlink()  # an older folder without a card gets one before upload
    res = run("push", local, "someone/tiny", "--private")
    assert res.exit_code == 0, (res.output, res.stderr)
    assert calls["create"][0] == "someone/tiny" and calls["create"][1]["private"] is True
    assert calls["upload"]["repo_id"] == "someone/tiny"
    assert sorted(calls["upload"]["allow_patterns"]) == ["*.json", "*.safetensors", "README.md"]
    assert calls["files"] == ["README.md", "detector.json", "head.safetensors"]
    assert "commit/abc" in res.stdout + res.stderr

    assert_one_line_error(run("push", tmp_path / "nothing", "someone/tiny"), "not a model folder")
    assert_one_line_error(run("push", local, "not a repo"), "repo id")


def test_model_card_says_what_the_metadata_knows(tmp_path):
    from fakescope.hub import model_card
    meta = json.loads((Path(__file__).parents[2] / "src/fakescope/models/default/detector.json").read_text())
    card = model_card(meta)
    header, body = card.split("\n---\n", 1)
    assert "license: mit" in header and "pipeline_tag: image-classification" in header
    assert "- roc_auc" in header and "model-index:" in header
    vm = meta["metadata"]["validation_metrics"]
    assert f"value: {vm['auc']:.4f}" in header
    assert meta["backbone"]["name"] in body and f"`{meta['method']}`" in body
    assert meta["metadata"]["threshold_rule"] in body
    for source in meta["metadata"]["validation_by_source"]:
        assert f"| {source} |" in body
    for d in meta["metadata"]["data"]:
        assert d in body
    assert "## Intended use" in body and "## Known weaknesses" in body
    # a folder with almost nothing recorded gets a card that says so rather than inventing numbers
    bare = model_card({"format": "fakescope.detector/1", "method": "linear", "threshold": 0.5})
    assert "metrics:" not in bare and "not recorded" in bare and "No validation metrics" in bare


def test_card_records_a_validation_report_and_shows_it(tmp_path):
    """`fakescope card MODEL --validation REPORT`: the held-out sources and the camera-photo rate go
    into the metadata (an undefined AUC as null, the file still JSON) and onto the card."""
    from fakescope.detector import load_detector
    local = save_tiny_detector(tmp_path / "model")
    report = {"backbone": "pixels", "method": "linear", "views": 1, "per_class": 10, "options": {"l2": 1.0},
              "leave_one_source_out": {
                  "photos": {"n_real": 40, "n_fake": 60, "auc": 0.8125, "acc_real": 0.9, "acc_fake": 0.55,
                             "selective": {"coverage": 0.7, "answered_accuracy": 0.875}},
                  "reals-only": {"n_real": 12, "n_fake": 0, "auc": float("nan"), "acc_real": 1.0, "acc_fake": None}},
              "device_held_out": {"n": 30, "devices": 7, "fpr": 0.0333, "coverage": 0.9, "answered_fpr": 0.0}}
    (tmp_path / "report.json").write_text(json.dumps(report))  # NaN as Python writes it
    res = run("card", local, "--validation", tmp_path / "report.json")
    assert res.exit_code == 0, res.output
    meta = json.loads((local / "detector.json").read_text())  # strict JSON: NaN became null
    sv = meta["metadata"]["source_validation"]
    assert sv["held_out_sources"]["reals-only"]["auc"] is None and sv["camera_photos"]["fpr"] == 0.0333
    card = (local / "README.md").read_text()
    assert "| photos | 40 | 60 | 0.812 | 0.900 | 0.550 | 0.700 | 0.875 |" in card
    assert "| reals-only | 12 | 0 | - | 1.000 | - | - | - |" in card
    assert "(30 photos, 7 devices): 0.033 called fake" in card and "method `linear`" in card
    assert load_detector(local).metadata["source_validation"] == sv  # the folder still loads
    (tmp_path / "other.json").write_text(json.dumps({"mean_auc": 0.9}))
    assert_one_line_error(run("card", local, "--validation", tmp_path / "other.json"), "leave_one_source_out")
    assert_one_line_error(run("card", tmp_path / "nothing", "--validation", tmp_path / "report.json"),
                          "not a detector folder")


@pytest.mark.slow
def test_cli_reads_hf_home_cache_in_a_fresh_process(tmp_path, images):
    """The environment route a user takes: HF_HOME + HF_HUB_OFFLINE=1 in a new process."""
    local = save_tiny_detector(tmp_path / "model")
    populate_cache(tmp_path / "hfhome" / "hub", "someone/tiny-detector", model_files(local))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hfhome"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "fakescope", "scan", str(images), "--model", "someone/tiny-detector",
                           "--out", str(out), "--no-table"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 3
