"""Video (fakescope.data.video) and the evidence scan: frames sampled from clips the test
encodes with PyAV; broken, huge, too long, empty and stream-less videos are per-item errors;
`fakescope scan` of a folder of C2PA-signed, XMP-tagged, PNG-parameter, plain images and videos
reports each and follows the provenance rule."""
from __future__ import annotations

import json

import pytest

import evidence_files as E
from fakescope.data.video import VideoLimits, aggregate, read_video, sample_times
from fakescope.images import ImageError, ImageLimits

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    E.make_video(d / "a.mp4", n=24, fps=12)                      # 2 s
    E.make_video(d / "b.webm", n=12, fps=12, codec="libvpx-vp9")  # 1 s
    E.make_video(d / "c.mkv", n=12, fps=6, codec="mpeg4")        # 2 s
    return d


@pytest.mark.parametrize("name, duration", [("a.mp4", 2.0), ("b.webm", 1.0), ("c.mkv", 2.0)])
def test_evenly_spaced_frames(clips, name, duration):
    v = read_video(clips / name, VideoLimits(frames=4))
    assert len(v.frames) == 4 and v.frames[0].size == (64, 48) and v.frames[0].mode == "RGB"
    assert abs(v.duration - duration) < 0.2
    assert v.times == sorted(v.times) and len(set(v.times)) == 4
    assert all(abs(t - s) <= 1 / 6 + 1e-6 for t, s in zip(v.times, sample_times(v.duration, VideoLimits(frames=4))))


def test_fps_sampling_and_the_frame_cap(clips):
    assert len(read_video(clips / "a.mp4", VideoLimits(fps=3)).frames) == 6
    assert len(read_video(clips / "a.mp4", VideoLimits(fps=12, max_frames=5)).frames) == 5
    # more targets than frames: every decoded frame at most once, never an error
    assert len(read_video(clips / "b.webm", VideoLimits(frames=200)).frames) == 12


def test_bytes_and_path_give_the_same_frames(clips):
    data = (clips / "a.mp4").read_bytes()
    a, b = read_video(clips / "a.mp4", VideoLimits(frames=3)), read_video(data, VideoLimits(frames=3))
    assert a.sha256 == b.sha256 and a.times == b.times


def _error(source, video=VideoLimits(), limits=ImageLimits()) -> str:
    with pytest.raises(ImageError) as e:
        read_video(source, video, limits)
    return e.value.reason


def test_broken_huge_long_and_empty_videos_are_typed_errors(clips, tmp_path):
    data = (clips / "a.mp4").read_bytes()
    assert _error(data[: len(data) // 2]).startswith("video_corrupt")
    assert _error(b"\0\0\0\x18ftypisom" + b"\0" * 300).startswith("video_corrupt")
    assert _error(clips / "a.mp4", VideoLimits(max_bytes=1000)).startswith("too_large")
    assert _error(clips / "a.mp4", VideoLimits(max_seconds=1.0)).startswith("video_too_long")
    assert _error(clips / "a.mp4", limits=ImageLimits(max_pixels=64 * 47)).startswith("too_many_pixels")
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert _error(tmp_path / "zero.mp4").startswith("empty")
    assert _error(tmp_path / "missing.mp4").startswith("unreadable")
    for ext in ("mp4", "mkv"):  # zero-length streams: a header, no frame
        with av.open(str(tmp_path / f"noframes.{ext}"), "w") as c:
            s = c.add_stream("libx264", rate=10)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            c.start_encoding()
        assert _error(tmp_path / f"noframes.{ext}").split(":")[0] in ("video_empty", "video_corrupt", "video_unsupported")


def test_a_file_without_a_video_stream_is_unsupported(tmp_path):
    import numpy as np
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert _error(path).startswith("video_unsupported")


def test_aggregate_rule():
    a = aggregate([0.1, 0.2, 0.9, 0.8, 0.1, 0.1, 0.1, 0.1])
    assert a["k"] == 2 and a["topk_mean"] == pytest.approx(0.85) and a["max"] == 0.9
    assert a["mean"] == pytest.approx(0.3) and a["rule"] == "topk_mean"
    assert aggregate([0.4])["topk_mean"] == 0.4


# ---------------------------------------------------------------- the whole scan
@pytest.fixture(scope="module")
def folder(tmp_path_factory, clips):
    pytest.importorskip("c2pa")
    pytest.importorskip("cryptography")
    try:
        from fakescope.backbones import load_backbone
        load_backbone("effnet-lite0")
    except Exception as e:  # the [offline] extra is missing
        pytest.skip(f"the default detector's backbone is unavailable: {e}")
    d = tmp_path_factory.mktemp("evidence")
    (d / "c2pa.jpg").write_bytes(E.c2pa_signed_jpeg(img=E.picture(1)))
    (d / "c2pa_tampered.jpg").write_bytes(E.tampered(E.c2pa_signed_jpeg(img=E.picture(2))))
    (d / "xmp.jpg").write_bytes(E.jpeg_with_xmp(E.xmp_packet(E.dst_description("trainedAlgorithmicMedia")), E.picture(3)))
    (d / "a1111.png").write_bytes(E.png_with_chunks(E.text_chunk("parameters", "x\nSteps: 20, Sampler: Euler, Seed: 1"),
                                                    img=E.picture(4)))
    (d / "plain.png").write_bytes(E.png_bytes(E.picture(5)))
    (d / "hostile.png").write_bytes(E.png_with_chunks(E.chunk(b"tEXt", b"k\0v", length=2**31), img=E.picture(6)))
    (d / "clip.mp4").write_bytes((clips / "a.mp4").read_bytes())
    (d / "broken.webm").write_bytes((clips / "b.webm").read_bytes()[:300])
    return d


def _scan(folder, out, *args):
    from typer.testing import CliRunner
    from fakescope.cli import app
    res = CliRunner().invoke(app, ["scan", str(folder), "--out", str(out), "--no-table", "--frames", "5", *args])
    recs = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    return res, recs


@pytest.mark.slow
@pytest.mark.offline_models
def test_scan_of_a_folder_with_evidence_and_video(folder, tmp_path):
    res, recs = _scan(folder, tmp_path / "decide.jsonl")
    assert res.exit_code == 3, res.output  # one broken video
    assert set(recs) == {"c2pa.jpg", "c2pa_tampered.jpg", "xmp.jpg", "a1111.png", "plain.png", "hostile.png",
                         "clip.mp4", "broken.webm"}
    for name in ("c2pa.jpg", "xmp.jpg", "a1111.png"):
        r = recs[name]
        assert r["label"] == "fake" and r["reason"].startswith("provenance: ") and 0 <= r["score"] <= 1
        assert r["provenance"]["status"] == "ai_claim"
    assert recs["c2pa.jpg"]["reason"].startswith("provenance: c2pa: trainedAlgorithmicMedia")
    tampered = recs["c2pa_tampered.jpg"]
    assert tampered["provenance"]["c2pa"]["valid"] is False and not (tampered["reason"] or "").startswith("provenance")
    assert recs["plain.png"]["provenance"]["summary"] == "no provenance"
    assert not (recs["plain.png"]["reason"] or "").startswith("provenance")
    assert any(n.startswith("png_chunk_too_large") for n in recs["hostile.png"]["provenance"]["notes"])
    # Pillow refuses its pixels too (the chunk claims 2 GB): an error for this item, its note kept
    assert recs["hostile.png"]["error"].startswith("truncated") and recs["hostile.png"]["label"] is None

    clip = recs["clip.mp4"]
    v = clip["video"]
    assert clip["error"] is None and len(v["frames"]) == 5 == v["sampled"]
    scores = [f["score"] for f in v["frames"]]
    assert clip["score"] == pytest.approx(aggregate(scores)["topk_mean"]) and v["max"] == pytest.approx(max(scores))
    assert clip["label"] == ("fake" if clip["score"] >= clip["threshold"] else "real")
    assert recs["broken.webm"]["error"].startswith("video_corrupt") and recs["broken.webm"]["score"] is None

    # report: the same scores, the pixel verdicts, the provenance objects all the same
    _, rep = _scan(folder, tmp_path / "report.jsonl", "--provenance", "report")
    for name, r in rep.items():
        assert r["score"] == pytest.approx(recs[name]["score"]) if r["score"] is not None else True
        assert not (r["reason"] or "").startswith("provenance")
        assert r["provenance"] == recs[name]["provenance"]
    _, off = _scan(folder, tmp_path / "off.jsonl", "--provenance", "off")
    assert all(r["provenance"] is None for r in off.values())


@pytest.mark.slow
@pytest.mark.offline_models
def test_parquet_output_carries_provenance_and_video(folder, tmp_path):
    pytest.importorskip("pyarrow")
    from typer.testing import CliRunner
    from fakescope.cli import app
    from fakescope.scale.outputs import read_parts
    out = tmp_path / "parts"
    res = CliRunner().invoke(app, ["scan", str(folder), "--out", str(out), "--format", "parquet", "--no-table",
                                   "--frames", "3"])
    assert res.exit_code == 3, res.output
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_parts(out).to_pylist()}
    assert json.loads(rows["c2pa.jpg"]["provenance"])["status"] == "ai_claim" and rows["c2pa.jpg"]["label"] == "fake"
    assert len(json.loads(rows["clip.mp4"]["video"])["frames"]) == 3 and rows["plain.png"]["video"] is None
