"""The service's provenance and video (issue 22): the same reader, rule, sampling and limits as
`fakescope scan`, on a stub detector whose score is the image's mean pixel."""
from __future__ import annotations

import pytest

import evidence_files as E
from fakescope.data.video import aggregate
from fakescope.service.app import ServiceConfig
from test_service import LIMITS, error_of, start

pytest.importorskip("fastapi")
av = pytest.importorskip("av")
pytest.importorskip("c2pa")


def _post(client, name: str, data: bytes, kind: str = "image/jpeg"):
    return client.post("/v1/detect", files={"file": (name, data, kind)})


@pytest.fixture(scope="module")
def served():
    client, det = start(ServiceConfig(**{**LIMITS, "video_frames": 4, "max_video_seconds": 5.0}))
    yield client
    client.__exit__(None, None, None)


def test_provenance_beside_the_score_and_the_decide_rule(served):
    signed = E.c2pa_signed_jpeg(img=E.picture(1))
    body = _post(served, "c2pa.jpg", signed).json()
    assert body["provenance"]["status"] == "ai_claim" and body["provenance"]["c2pa"]["valid"]
    assert body["label"] == "fake" and body["reason"].startswith("provenance: c2pa")
    tampered = _post(served, "bad.jpg", E.tampered(signed)).json()
    assert tampered["provenance"]["c2pa"]["valid"] is False
    assert not (tampered["reason"] or "").startswith("provenance")
    plain = _post(served, "plain.png", E.png_bytes(), "image/png").json()
    assert plain["provenance"]["summary"] == "no provenance" and plain["reason"] is None


def test_report_mode_keeps_the_pixel_verdict():
    client, _ = start(ServiceConfig(**{**LIMITS, "provenance": "report"}))
    try:
        data = E.png_with_chunks(E.text_chunk("parameters", "x\nSteps: 20, Sampler: Euler, Seed: 1"))
        body = _post(client, "a.png", data, "image/png").json()
        assert body["provenance"]["status"] == "ai_claim" and body["reason"] is None
        assert body["label"] == ("fake" if body["score"] >= 0.5 else "real")
    finally:
        client.__exit__(None, None, None)


def test_video_upload_is_scored_as_frames(served, tmp_path):
    E.make_video(tmp_path / "a.mp4", n=24, fps=12)
    body = _post(served, "a.mp4", (tmp_path / "a.mp4").read_bytes(), "video/mp4").json()
    v = body["video"]
    assert len(v["frames"]) == 4 and body["score"] == pytest.approx(aggregate([f["score"] for f in v["frames"]])["topk_mean"])
    assert body["label"] == ("fake" if body["score"] >= 0.5 else "real")


def test_bad_videos_are_refused_with_their_code(served, tmp_path):
    E.make_video(tmp_path / "long.mp4", n=80, fps=10)  # 8 s, over the 5 s limit
    error_of(_post(served, "long.mp4", (tmp_path / "long.mp4").read_bytes(), "video/mp4"), 413, "video_too_long")
    E.make_video(tmp_path / "b.mp4", n=12, fps=12)
    broken = (tmp_path / "b.mp4").read_bytes()[:400]
    error_of(_post(served, "b.mp4", broken, "video/mp4"), 422, "video_corrupt")
