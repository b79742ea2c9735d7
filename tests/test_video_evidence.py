"""Issue 22's remainder: provenance of video files (C2PA in MP4, XMP, container / stream tags),
edit maps per sampled video frame (`scan --localize`, the service), and provenance in the Python
API (`Detector.predict`). Every file is made here (evidence_files.py)."""
from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evidence_files as E
from fakescope.data.video import VideoLimits, read_video
from fakescope.provenance import apply_rule, read_video_provenance

av = pytest.importorskip("av")

XMP_UUID = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")  # the XMP box of ISO BMFF files
COMFY = '{"prompt": {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}, "workflow": {"nodes": []}}'


def tagged_video(path, fmt: str, codec: str, comment: str | None = None, handler: str | None = None, n: int = 6):
    """A short clip with a container comment and a video-stream handler name (the muxer keeps both)."""
    with av.open(str(path), "w", format=fmt) as c:
        if comment is not None:
            c.metadata["comment"] = comment
        s = c.add_stream(codec, rate=12)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if handler is not None:
            s.metadata["handler_name"] = handler
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.asarray(E.picture(i)), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def with_xmp_box(mp4: bytes, packet: str) -> bytes:
    """The MP4 with a top-level uuid box holding an XMP packet, where Adobe's tools put it."""
    body = XMP_UUID + packet.encode()
    return mp4 + struct.pack(">I", 8 + len(body)) + b"uuid" + body


def c2pa_signed_mp4(src: bytes, source_type: str) -> bytes:
    import c2pa

    manifest = {"claim_generator_info": [{"name": "TestVideoGen", "version": "2.0"}], "title": "clip.mp4",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": E.IPTC + source_type}]}}]}
    out = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(E._signer(), "video/mp4", io.BytesIO(src), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("evidence-clips")
    E.make_video(d / "plain.mp4", n=24, fps=12)
    tagged_video(d / "sora.mp4", "mp4", "libx264", handler="Made by Sora")
    tagged_video(d / "comfy.mkv", "matroska", "mpeg4", comment=COMFY)
    tagged_video(d / "notes.mkv", "matroska", "mpeg4", comment="my holiday, shot on a phone")
    (d / "xmp.mp4").write_bytes(with_xmp_box((d / "plain.mp4").read_bytes(),
                                             E.xmp_packet(E.dst_description("trainedAlgorithmicMedia", "Veo"))))
    (d / "badxmp.mp4").write_bytes(with_xmp_box((d / "plain.mp4").read_bytes(), "<x:xmpmeta><unclosed"))
    return d


# ---------------------------------------------------------------- the reader
def test_plain_video_has_no_ai_claim(clips):
    for source in (clips / "plain.mp4", (clips / "plain.mp4").read_bytes()):
        p = read_video_provenance(source)
        assert p["status"] == "metadata" and p["ai_claims"] == [] and p["c2pa"] is None
        # the muxer's own name is reported as what it is, and decides nothing
        enc = [e for e in p["evidence"] if e["field"] == "container encoder"]
        assert len(enc) == 1 and enc[0]["value"].startswith("Lavf") and enc[0]["ai"] is False
        assert apply_rule("real", None, p, "decide") == ("real", None)


def test_stream_handler_naming_a_generator(clips):
    p = read_video_provenance(clips / "sora.mp4")
    assert p["status"] == "ai_claim" and p["ai_claims"] == ["video video stream handler_name: Sora (OpenAI)"]
    assert apply_rule("real", None, p, "decide") == ("fake", "provenance: video video stream handler_name: Sora (OpenAI)")


def test_comfyui_prompt_in_a_matroska_comment_and_a_plain_comment(clips):
    p = read_video_provenance(clips / "comfy.mkv")
    assert p["status"] == "ai_claim" and p["ai_claims"] == ["video comment: ComfyUI prompt / workflow"]
    q = read_video_provenance(clips / "notes.mkv")
    assert q["ai_claims"] == [] and not any(e["field"] == "comment" for e in q["evidence"])


def test_xmp_digital_source_type_in_an_mp4_uuid_box(clips):
    p = read_video_provenance(clips / "xmp.mp4")
    fields = {e["field"]: e for e in p["evidence"]}
    assert fields["video Iptc4xmpExt:DigitalSourceType"]["ai"] is True
    assert fields["video CreatorTool"]["value"] == "Veo" and p["status"] == "ai_claim"
    bad = read_video_provenance(clips / "badxmp.mp4")  # broken XML: a note, no claim, no crash
    assert any(n.startswith("xmp_malformed") for n in bad["notes"]) and bad["ai_claims"] == []


def test_c2pa_manifest_in_an_mp4_valid_and_tampered(clips, tmp_path):
    pytest.importorskip("c2pa")
    pytest.importorskip("cryptography")
    signed = c2pa_signed_mp4((clips / "plain.mp4").read_bytes(), "trainedAlgorithmicMedia")
    (tmp_path / "signed.mp4").write_bytes(signed)
    for source in (tmp_path / "signed.mp4", signed):  # streamed from the file, or from bytes
        p = read_video_provenance(source)
        assert p["c2pa"]["valid"] and p["c2pa"]["claim_generator"] == "TestVideoGen 2.0"
        assert p["ai_claims"][0] == "c2pa: trainedAlgorithmicMedia by TestVideoGen 2.0 (valid, signer not on a trust list)"
    assert len(read_video(tmp_path / "signed.mp4", VideoLimits(frames=3)).frames) == 3  # still a playable video
    bad = bytearray(signed)
    bad[len(bad) // 2] ^= 0x55  # inside the media data the manifest hashes
    (tmp_path / "tampered.mp4").write_bytes(bytes(bad))
    p = read_video_provenance(tmp_path / "tampered.mp4")
    assert p["c2pa"]["present"] and not p["c2pa"]["valid"] and p["ai_claims"] == []
    capture = read_video_provenance(c2pa_signed_mp4((clips / "plain.mp4").read_bytes(), "digitalCapture"))
    assert capture["c2pa"]["valid"] and capture["ai_claims"] == []


def test_garbage_is_a_note_never_a_crash(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\0\0\0\x18ftypisom" + b"\xff" * 200)
    p = read_video_provenance(tmp_path / "junk.mp4")
    assert p["ai_claims"] == [] and any(n.startswith("video_tags_failed") for n in p["notes"])


# ---------------------------------------------------------------- the service: provenance and maps per frame
class FrameLocalizer:
    """predict_maps: each image's grey level / 255, so a frame's map is that frame's own picture."""

    def __init__(self):
        from fakescope.backbones import parse_spec
        self.spec, self.threshold, self.calls = parse_spec("vit-s14-focus"), 0.5, []

    def predict_maps(self, images):
        self.calls.append(len(images))
        return [np.asarray(im.convert("L"), dtype=np.float32) / 255.0 for im in images]


def test_service_maps_every_frame_and_reads_video_provenance(clips):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from fakescope.service.app import Models, ServiceConfig, create_app
    from test_service import StubDetector, wait_ready

    det, loc = StubDetector(), FrameLocalizer()
    cfg = ServiceConfig(localizer="frames", video_frames=4, max_upload_bytes=4_000_000)
    with TestClient(create_app(cfg, loader=lambda c: Models(det, loc))) as client:
        wait_ready(client)
        data = (clips / "sora.mp4").read_bytes()
        body = client.post("/v1/detect", files={"file": ("sora.mp4", data, "video/mp4")}).json()
        off = client.post("/v1/detect?localize=false", files={"file": ("sora.mp4", data, "video/mp4")}).json()
    frames = body["video"]["frames"]
    assert len(frames) == 4 and all(0 <= f["map_mean"] <= 1 and 0 <= f["map_max"] <= 1 for f in frames)
    best = max(frames, key=lambda f: f["map_max"])
    assert body["map_max"] == body["map_score"] == best["map_max"] and body["map_frame"] == best["t"]
    assert body["map_mean"] == pytest.approx(np.mean([f["map_mean"] for f in frames]))
    # the mask is the map of that frame: its grey picture, as decoded from the video
    v = read_video(data, VideoLimits(frames=4))
    grey = np.asarray(v.frames[v.times.index(best["t"])].convert("L"), dtype=np.int16)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))), dtype=np.int16)
    assert mask.shape == grey.shape and np.abs(mask - grey).max() <= 1
    assert body["localizer"] == "frames" and off["mask_png"] is None and "map_mean" not in off["video"]["frames"][0]
    # the container's provenance, and the decide rule on the video's verdict
    assert body["provenance"]["status"] == "ai_claim" and body["label"] == "fake"
    assert body["reason"] == "provenance: video video stream handler_name: Sora (OpenAI)"
    assert off["score"] == body["score"]


# ---------------------------------------------------------------- scan --localize per frame
@pytest.mark.offline_models
def test_scan_localize_maps_each_sampled_frame(clips, tmp_path, monkeypatch):
    try:
        from fakescope.detector import load_detector
        load_detector("effnet-v2").backbone
    except Exception as e:  # the [offline] extra is missing
        pytest.skip(f"effnet-v2's backbone is unavailable: {e}")
    from typer.testing import CliRunner
    import fakescope.localize.evaluate as loc_eval
    from fakescope.cli import app
    from fakescope.images import DEFAULT_LIMITS

    loc = FrameLocalizer()
    loc.limits = DEFAULT_LIMITS
    monkeypatch.setattr(loc_eval, "load_localizer", lambda path=None: loc)
    d = tmp_path / "in"
    d.mkdir()
    (d / "sora.mp4").write_bytes((clips / "sora.mp4").read_bytes())
    (d / "plain.mp4").write_bytes((clips / "plain.mp4").read_bytes())
    E.picture(9).save(d / "still.png")
    out, masks = tmp_path / "out.jsonl", tmp_path / "maps"
    res = CliRunner().invoke(app, ["scan", str(d), "--model", "effnet-v2", "--localize", "--masks", str(masks),
                                   "--frames", "3", "--out", str(out), "--no-table"])
    assert res.exit_code == 0, res.output
    recs = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    for name in ("sora.mp4", "plain.mp4"):
        r = recs[name]
        frames = r["video"]["frames"]
        assert len(frames) == 3 and "map_error" not in r
        assert r["map_max"] == max(f["map_max"] for f in frames)
        assert r["map_mean"] == pytest.approx(np.mean([f["map_mean"] for f in frames]))
        v = read_video(d / name, VideoLimits(frames=3))
        for f, img in zip(frames, v.frames):  # each frame's own map, written beside its overlay
            assert f["map_mean"] == pytest.approx(np.asarray(img.convert("L"), np.float64).mean() / 255, abs=1e-4)
            mask = np.asarray(Image.open(f["mask_png"]), dtype=np.int16)
            assert np.abs(mask - np.asarray(img.convert("L"), dtype=np.int16)).max() <= 1
            assert (masks / Path(f["mask_png"]).name.replace("_mask", "_overlay")).exists()
    assert recs["sora.mp4"]["label"] == "fake" and recs["sora.mp4"]["reason"].startswith("provenance: video")
    assert recs["sora.mp4"]["provenance"]["status"] == "ai_claim"
    assert "map_max" in recs["still.png"] and "video" not in recs["still.png"]
    # resume: every line already has its maps, nothing is scored again
    again = CliRunner().invoke(app, ["scan", str(d), "--model", "effnet-v2", "--localize", "--frames", "3",
                                     "--out", str(out), "--no-table"])
    assert again.exit_code == 0 and len(out.read_text().splitlines()) == 3


# ---------------------------------------------------------------- the Python API
@pytest.mark.offline_models
def test_detector_predict_reports_provenance_and_follows_the_rule(tmp_path):
    from fakescope.detector import load_detector
    try:
        det = load_detector("effnet-v2")
        det.backbone
    except Exception as e:
        pytest.skip(f"effnet-v2's backbone is unavailable: {e}")
    tagged = E.jpeg_with_xmp(E.xmp_packet(E.dst_description("trainedAlgorithmicMedia")), E.picture(3))
    (tmp_path / "tagged.jpg").write_bytes(tagged)
    (tmp_path / "plain.png").write_bytes(E.png_bytes(E.picture(4)))
    inputs = [tmp_path / "tagged.jpg", tagged, tmp_path / "plain.png", E.picture(3), tmp_path / "missing.jpg"]
    decide = det.predict(inputs)
    report = det.predict(inputs, provenance="report")
    off = det.predict(inputs, provenance="off")
    claim = "provenance: xmp XMP Iptc4xmpExt:DigitalSourceType: trainedAlgorithmicMedia"
    for r in decide[:2]:  # a path and the same bytes: the same object as scan's JSON line
        assert r.label == "fake" and r.reason == claim and r.provenance["status"] == "ai_claim"
    assert decide[2].provenance["summary"] == "no provenance" and not (decide[2].reason or "").startswith("provenance")
    assert decide[3].provenance is None  # pixels without a file: nothing to read
    assert decide[4].error.startswith("unreadable") and decide[4].provenance is None
    for d, r, o in zip(decide, report, off):
        assert d.score == r.score == o.score  # the rule never changes the score
        assert r.provenance == d.provenance and o.provenance is None
        assert (r.label, r.reason) == (o.label, o.reason)  # report: the pixel verdict
    assert decide[0].to_dict()["provenance"]["ai_claims"] == [claim[len("provenance: "):]]
    with pytest.raises(ValueError):
        det.predict(inputs[:1], provenance="maybe")



def test_mov_is_read_like_mp4(tmp_path):
    E.make_video(tmp_path / "a.mov", n=12, fps=12, fmt="mov")
    v = read_video(tmp_path / "a.mov", VideoLimits(frames=4))
    assert len(v.frames) == 4 and v.duration == pytest.approx(1.0, abs=0.1)
    assert read_video_provenance(tmp_path / "a.mov")["ai_claims"] == []


def test_service_refuses_a_video_over_its_byte_limit(clips):
    pytest.importorskip("fastapi")
    from fakescope.service.app import ServiceConfig
    from test_service import LIMITS, error_of, start

    data = (clips / "plain.mp4").read_bytes()
    client, _ = start(ServiceConfig(**{**LIMITS, "max_video_bytes": len(data) - 1}))
    try:
        r = client.post("/v1/detect", files={"file": ("plain.mp4", data, "video/mp4")})
        error_of(r, 413, "too_large")
        small = (clips / "sora.mp4").read_bytes()  # under the limit: scored (a 6-frame clip gives its 6 frames)
        ok = client.post("/v1/detect", files={"file": ("small.mp4", small, "video/mp4")})
        assert ok.status_code == 200 and len(ok.json()["video"]["frames"]) == 6
    finally:
        client.__exit__(None, None, None)
