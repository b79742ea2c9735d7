"""The cases the issue 18 attack found already handled, kept here so they stay handled: broken
images, pixel bombs, tar traversal, the API key, upload limits and a killed scan."""
from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib

import pytest

from .conftest import png_bytes, run


def _bomb_png(side: int) -> bytes:
    """A PNG header declaring side x side pixels, with almost no data behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_held_broken_images_and_bombs_are_per_item_errors(tmp_path, tiny_model):
    d = tmp_path / "in"
    d.mkdir()
    (d / "ok.png").write_bytes(png_bytes(1))
    (d / "empty.png").write_bytes(b"")
    (d / "cut.png").write_bytes(png_bytes(2, 64)[:200])
    (d / "text.jpg").write_bytes(b"hello")
    (d / "bomb.png").write_bytes(_bomb_png(100_000))
    out = tmp_path / "r.jsonl"
    r = run("scan", d, "--model", tiny_model, "--out", out, "--no-table")
    assert r.exit_code == 3
    err = {json.loads(x)["path"].rsplit("/", 1)[1]: json.loads(x)["error"] for x in out.read_text().splitlines()}
    assert err["ok.png"] is None and err["empty.png"].startswith("empty") and err["cut.png"].startswith("truncated")
    assert err["text.jpg"].startswith("not_an_image") and err["bomb.png"].startswith("too_many_pixels")


def test_held_tar_traversal_names_are_never_written(tmp_path, tiny_model):
    src = tmp_path / "a.tar"
    with tarfile.open(src, "w") as tar:
        for name in ("../../escape.png", "/abs/escape.png", "real/ok.png"):
            data = png_bytes(3)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = run("scan", src, "--model", tiny_model, "--out", tmp_path / "r.jsonl", "--no-table")
    assert r.exit_code == 0  # read in place: scored, nothing extracted anywhere
    assert not (tmp_path.parent / "escape.png").exists() and not (tmp_path / "escape.png").exists()


def test_held_a_killed_scan_resumes_without_losing_or_repeating(tmp_path, tiny_model, images):
    out = tmp_path / "r.jsonl"
    assert run("scan", images, "--model", tiny_model, "--out", out, "--no-table").exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:20])  # killed mid-write
    r = run("scan", images, "--model", tiny_model, "--out", out, "--no-table")
    assert r.exit_code == 0 and "resuming: 1 of 3" in r.stderr
    assert sorted(json.loads(x)["path"] for x in out.read_text().splitlines()) == sorted(
        str(p) for p in images.iterdir())


def test_held_api_key_and_upload_limit():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fakescope.service.app import Models, ServiceConfig, create_app

    from .test_service_hardening import Stub
    with TestClient(create_app(ServiceConfig(localizer=None, api_key="k", max_upload_bytes=1000),
                               loader=lambda _: Models(Stub(), None))) as c:
        for _ in range(500):
            if c.get("/readyz").status_code == 200:
                break
        assert c.post("/v1/detect", files={"file": ("a.png", png_bytes(1))}).status_code == 401
        big = {"file": ("a.png", png_bytes(1, 200))}
        assert c.post("/v1/detect", files=big, headers={"X-API-Key": "k"}).status_code == 413
        assert c.post("/v1/detect", files={"file": ("a.png", png_bytes(1))}, headers={"X-API-Key": "k"}).status_code == 200
