"""Results files and careless `--out` (issue 18, cases 5, 6 and 7): nothing a user already has is
lost, a second writer is refused, and a NaN never becomes a verdict or a non-JSON line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fakescope.detector import Detector, load_detector
from fakescope.errors import ModelFolderError, OutputError
from fakescope.scale.outputs import ResultsFile

from .conftest import assert_one_line_error, edit_json, run, save_tiny_detector


def _lines(path):
    return path.read_text().splitlines()


def test_case5_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path, tiny_model, images):
    out = tmp_path / "r.jsonl"
    first = ResultsFile(out)
    first.open("tiny", "1")
    try:  # a second scan on the same --out while the first runs
        assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", out, "--no-table"),
                              "another running scan")
        first.append([{"path": "p", "model": "tiny", "model_version": "1", "score": 0.1, "error": None}])
    finally:
        first.close()
    assert [json.loads(x)["path"] for x in _lines(out)] == ["p"]  # the first writer's record is there
    r = run("scan", images, "--model", tiny_model, "--out", out, "--no-table")  # and once it is done: resumes
    assert r.exit_code == 0 and len(_lines(out)) == 4


def test_scan_to_jsonl_python_api_resumes_and_repairs(tmp_path, tiny_model, images):
    from fakescope.scale.inputs import enumerate_inputs
    from fakescope.scale.jobs import scan_to_jsonl

    inputs = enumerate_inputs([str(images)])
    out = tmp_path / "r.jsonl"
    first = scan_to_jsonl(inputs.take([0]), ResultsFile(out), "tiny", "1", str(tiny_model), log=lambda m: None)
    assert [r["path"] for r in first] == inputs.paths[:1]
    with open(out, "ab") as f:
        f.write(b'{"path": "torn by a ki')  # a killed run's half line
    scored: list = []
    full = scan_to_jsonl(inputs, ResultsFile(out), "tiny", "1", str(tiny_model),
                         enrich=lambda recs, sources: scored.extend(r["path"] for r in recs), log=lambda m: None)
    assert [r["path"] for r in full] == inputs.paths  # every input once, in input order
    assert scored == inputs.paths[1:] and full[0] == first[0]  # the first was read back, not scored again
    assert [json.loads(x)["path"] for x in _lines(out)] == inputs.paths  # the torn line is gone
    # a record without the key a run requires is scored again (and replaced, not duplicated)
    again = scan_to_jsonl(inputs, ResultsFile(out), "tiny", "1", str(tiny_model), require="map_mean",
                          enrich=lambda recs, sources: [r.update(map_mean=0.5) for r in recs], log=lambda m: None)
    assert all(r["map_mean"] == 0.5 for r in again) and len(_lines(out)) == len(inputs.paths)
    assert scan_to_jsonl(inputs.take([1]), None, "tiny", "1", str(tiny_model))[0]["score"] == full[1]["score"]


def test_enrich_gets_each_records_own_bytes_for_tar_members(tmp_path, tiny_model, images):
    """What scan --localize reads per record: a tar member's bytes (no file has its path), a file's path."""
    import tarfile

    from fakescope.scale.inputs import enumerate_inputs
    from fakescope.scale.jobs import scan_to_jsonl

    files = sorted(p for p in images.iterdir() if p.suffix != ".txt")
    tar = tmp_path / "photos.tar"
    with tarfile.open(tar, "w") as t:
        for f in files:
            t.add(f, arcname=f"real/{f.name}")
    inputs = enumerate_inputs([str(tar), str(files[0])])
    seen: dict = {}
    def enrich(recs, sources):
        seen.update({r["path"]: s for r, s in zip(recs, sources)})
    recs = scan_to_jsonl(inputs, None, "tiny", "1", str(tiny_model), enrich=enrich, log=lambda m: None)
    assert set(seen) == {r["path"] for r in recs} == set(inputs.paths)
    for f in files:
        member = seen[f"{tar}::real/{f.name}"]
        assert member.data == f.read_bytes()  # its bytes, read from the tar
    assert seen[str(files[0])].data is None and seen[str(files[0])].path == str(files[0])  # a file: its path


def test_case6_out_that_is_the_input_manifest_is_refused(tmp_path, tiny_model, images):
    manifest = tmp_path / "m.csv"
    text = "path\n" + "".join(f"{p}\n" for p in sorted(images.iterdir()))
    manifest.write_text(text)
    assert_one_line_error(run("scan", manifest, "--model", tiny_model, "--out", manifest, "--format", "jsonl",
                              "--no-table"), "also an input")
    assert manifest.read_text() == text


def test_case6_an_existing_text_file_is_not_overwritten(tmp_path, tiny_model, images):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nline two\n")
    assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", notes, "--no-table"),
                          "not a fakescope results file")
    assert notes.read_text() == "my notes\nline two\n"


def test_case6_blank_and_foreign_lines_cost_nothing(tmp_path, tiny_model, images):
    out = tmp_path / "r.jsonl"
    other = {"path": "x.png", "sha256": None, "score": 0.3, "label": "real", "threshold": 0.5, "model": "other",
             "model_version": "9", "error": None}
    mine = {**other, "path": str(sorted(images.iterdir())[0]), "model": "tiny", "model_version": "1", "score": 0.7}
    out.write_text(json.dumps(mine) + "\n\n" + "not json at all\n" + "[1, 2]\n" + json.dumps(other) + "\n")
    before = out.read_text()
    r = run("scan", images, "--model", tiny_model, "--out", out, "--no-table")
    assert r.exit_code == 0 and "resuming: 1 of 3" in r.stderr
    text = out.read_text()
    assert text.startswith(before)  # every line kept, the other model's record included; two appended
    assert len(text.splitlines()) == len(before.splitlines()) + 2


def test_case7_nan_weights_give_a_per_item_error_not_a_verdict(tmp_path, images):
    model = save_tiny_detector(tmp_path / "nan", weight=float("nan"))
    out = tmp_path / "r.jsonl"
    r = run("scan", images, "--model", model, "--out", out, "--no-table")
    assert r.exit_code == 4, r.output  # none could be scored
    recs = [json.loads(x) for x in _lines(out)]  # strict JSON: no NaN anywhere
    assert all(x["score"] is None and x["label"] is None and x["error"].startswith("non_finite_score") for x in recs)
    res = load_detector(model).predict(str(sorted(images.iterdir())[0]))[0]
    assert res.score is None and res.error.startswith("non_finite_score")


@pytest.mark.parametrize("change", [{"threshold": float("nan")}, {"threshold": "0.5x"},
                                    {"calibration": {"kind": "platt", "a": float("inf"), "b": 0.0}}])
def test_case7_a_non_finite_threshold_or_calibration_does_not_load(tmp_path, images, change):
    model = save_tiny_detector(tmp_path / "m", **change)
    with pytest.raises(ModelFolderError):
        load_detector(model)
    assert_one_line_error(run("scan", images, "--model", model, "--no-table"), str(model))


def test_case7_a_nan_threshold_is_never_written(tmp_path):
    det = load_detector(save_tiny_detector(tmp_path / "m"))
    det.threshold = math.nan
    with pytest.raises(ValueError):
        det.save(tmp_path / "bad")
    assert not (tmp_path / "bad" / "detector.json").exists()
