"""`fakescope serve`: every endpoint, every limit and bad input, the micro-batcher, the schema.

Most tests run the real app (real request parsing, real decoding and preprocessing through
pipeline.prepare) over a stub detector, so they need no model weights and take milliseconds.
The shipped detector and localiser are used where the numbers matter: the service must
give the same score (and map score) as `fakescope scan` for the same file."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402

from fakescope.backbones import parse_spec  # noqa: E402
from fakescope.detector import Result  # noqa: E402
from fakescope.images import DEFAULT_LIMITS  # noqa: E402
from fakescope.pipeline import prepare  # noqa: E402
from fakescope.service.app import Models, ServiceConfig, create_app  # noqa: E402
from fakescope.service.batcher import MicroBatcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "cifake").rglob("*.jpg"))
STATIC = ROOT / "src" / "fakescope" / "service" / "static"


# ---------------------------------------------------------------- helpers
class StubDetector:
    """The Detector surface the service uses; the score is the image's mean pixel / 255, so it
    depends on the decoded pixels. Records batch sizes; `delay` / `fail` simulate slow / broken models,
    and clearing `gate` holds every forward until it is set again (a model that has not finished)."""

    def __init__(self, delay: float = 0.0):
        self.spec = parse_spec("effnet-lite0")  # real preprocessing; no weights are loaded
        self.threshold, self.id, self.version = 0.5, "stub", "7"
        self.delay, self.fail = delay, False
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def prepare_item(self, sample, limits=DEFAULT_LIMITS):  # Detector.prepare_item: nothing deferred
        return prepare(sample, self.spec, (0,), limits)[0]

    def predict_batch(self, items):
        self.batches.append(len(items))
        time.sleep(self.delay)
        self.gate.wait()
        if self.fail:
            raise RuntimeError("secret internal detail")
        out = []
        for it in items:
            if it.ok:
                s = float(np.clip(it.array.mean() * 0.25 + 0.5, 0, 1))
                out.append(Result(it.sample.path, it.sha256, s, "fake" if s >= 0.5 else "real", 0.5, "stub", "7"))
            else:
                out.append(Result(it.sample.path, None, None, None, 0.5, "stub", "7", it.error))
        return out


def png(w=40, h=30, seed=0, mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(w=64, h=48, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def wait_ready(client: TestClient, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < end, client.get("/readyz").json()
        time.sleep(0.05)


def error_of(r, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in r.text
    return body["error"]["detail"]


def start(config: ServiceConfig, det=None, **client_kw):
    det = det or StubDetector()
    client = TestClient(create_app(config, loader=lambda cfg: Models(det, None)), **client_kw)
    client.__enter__()
    wait_ready(client)
    det.batches.clear()  # forget the warm-up
    return client, det


LIMITS = dict(localizer=None, max_upload_bytes=200_000, max_batch_bytes=600_000, max_pixels=1_000_000,
              max_batch_files=4, request_timeout_s=10.0, batch_window_ms=2.0)


@pytest.fixture(scope="module")
def stub():
    client, det = start(ServiceConfig(**LIMITS))
    yield client, det
    client.__exit__(None, None, None)


# ---------------------------------------------------------------- endpoints
def test_health_ready_models(stub):
    client, _ = stub
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/models").json()
    assert info["detector"] == {"id": "stub", "version": "7", "threshold": 0.5, "backbone": "effnet-lite0", "method": "?",
                                "uncertain_band": None}
    assert info["localizer"] is None
    assert info["limits"]["max_upload_bytes"] == 200_000 and info["limits"]["max_batch_files"] == 4
    assert info["batching"]["max_size"] == 32 and info["keeps_uploads"] is False


def test_detect_multipart_and_json_agree(stub):
    client, _ = stub
    data = png(seed=1)
    r = client.post("/v1/detect", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200, r.text
    res = r.json()
    for key in ("score", "label", "threshold", "model", "model_version", "sha256", "timing_ms", "batch_size"):
        assert key in res
    assert res["model"] == "stub" and res["model_version"] == "7" and res["filename"] == "a.png"
    assert res["label"] == ("fake" if res["score"] >= 0.5 else "real")
    assert res["timing_ms"]["total"] > 0 and res["mask_png"] is None
    b64 = base64.b64encode(data).decode()
    for body in ({"image": b64, "filename": "dir/../b.png"}, {"image": "data:image/png;base64," + b64}):
        j = client.post("/v1/detect", json=body)
        assert j.status_code == 200, j.text
        assert j.json()["score"] == res["score"] and j.json()["sha256"] == res["sha256"]
    assert client.post("/v1/detect", json={"image": b64, "filename": "dir/../b.png"}).json()["filename"] == "b.png"


def test_batch_reports_each_file_in_place(stub):
    client, _ = stub
    files = [("file", ("a.png", png(seed=2))), ("file", ("b.jpg", jpeg())), ("file", ("c.jpg", b"not an image")),
             ("file", ("d.png", png(seed=3)))]
    r = client.post("/v1/detect/batch", files=files)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["filename"] for x in res] == ["a.png", "b.jpg", "c.jpg", "d.png"]
    assert res[2]["score"] is None and res[2]["error"]["code"] == "not_an_image"
    assert all(x["error"] is None and 0 <= x["score"] <= 1 for i, x in enumerate(res) if i != 2)
    single = client.post("/v1/detect", files={"file": ("a.png", png(seed=2))}).json()
    assert single["score"] == res[0]["score"]
    j = client.post("/v1/detect/batch", json={"images": [base64.b64encode(png(seed=2)).decode(),
                                                         {"image": base64.b64encode(jpeg()).decode(), "filename": "b.jpg"}]})
    assert j.status_code == 200 and [x["score"] for x in j.json()["results"]] == [res[0]["score"], res[1]["score"]]


def test_page_and_static_assets_are_served_and_self_contained(stub):
    client, _ = stub
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for f in STATIC.iterdir():  # the page must work offline: no URL to any other host, no web fonts
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f
        assert "@import" not in text and "@font-face" not in text
    assert error_of(client.get("/nope"), 404, "not_found")
    error_of(client.get("/v1/detect"), 405, "method_not_allowed")


# ---------------------------------------------------------------- bad input and limits
def test_bad_files_are_refused_by_their_content(stub):
    client, _ = stub
    data = jpeg()
    cases = [
        (b"", 422, "empty"),
        (data[: len(data) // 2], 422, "truncated"),
        (b"<html><body>not a picture</body></html>" * 3, 415, "not_an_image"),
        (b"hello world, this is text", 415, "not_an_image"),
    ]
    for payload, status, code in cases:  # all named .jpg and declared image/jpeg: neither is trusted
        r = client.post("/v1/detect", files={"file": ("photo.jpg", payload, "image/jpeg")})
        error_of(r, status, code)
    # a real PNG named .txt and declared text/plain is still an image
    assert client.post("/v1/detect", files={"file": ("notes.txt", png(), "text/plain")}).status_code == 200


def test_pixel_limit(stub):
    client, _ = stub
    big = io.BytesIO()
    Image.new("RGB", (1200, 1000)).save(big, format="PNG")  # small file, 1.2 MP > 1 MP limit
    detail = error_of(client.post("/v1/detect", files={"file": ("big.png", big.getvalue())}), 413, "too_many_pixels")
    assert "1,200,000" in detail


def test_byte_limits(stub):
    client, _ = stub
    # far over: refused from Content-Length before the body is read
    error_of(client.post("/v1/detect", files={"file": ("x.png", b"\0" * 400_000)}), 413, "too_large")
    # just over the per-file limit, inside the body allowance: refused when the file is read
    noise = png(300, 300, seed=4)  # ~270 KB of incompressible pixels
    assert len(noise) > 200_000
    error_of(client.post("/v1/detect", files={"file": ("n.png", noise)}), 413, "too_large")
    # no Content-Length (chunked upload): counted while it streams in
    def chunks():
        for _ in range(100):
            yield b"\0" * 10_000
    error_of(client.post("/v1/detect", content=chunks(), headers={"content-type": "application/json"}), 413, "too_large")
    error_of(client.post("/v1/detect/batch", files=[("file", ("n.png", noise))] * 3), 413, "too_large")


def test_batch_size_limit(stub):
    client, _ = stub
    five = [("file", (f"{i}.png", png(seed=i))) for i in range(5)]
    error_of(client.post("/v1/detect/batch", files=five), 413, "too_many_files")
    b64 = base64.b64encode(png()).decode()
    error_of(client.post("/v1/detect/batch", json={"images": [b64] * 5}), 413, "too_many_files")
    detail = error_of(client.post("/v1/detect", files=five[:2]), 413, "too_many_files")
    assert "batch" in detail


def test_malformed_requests(stub):
    client, _ = stub
    j = {"content-type": "application/json"}
    error_of(client.post("/v1/detect", content=b"{not json", headers=j), 400, "bad_json")
    error_of(client.post("/v1/detect", json={"picture": "abc"}), 400, "bad_json")
    error_of(client.post("/v1/detect", json=["abc"]), 400, "bad_json")
    error_of(client.post("/v1/detect", json={"image": "!!!not base64!!!"}), 400, "bad_base64")
    error_of(client.post("/v1/detect/batch", json={"images": "abc"}), 400, "bad_json")
    error_of(client.post("/v1/detect", files={"other": ("a.png", png())}), 400, "missing_file")
    error_of(client.post("/v1/detect", data={"file": "just text"}, files={"x": ("a.png", png())}), 400, "missing_file")
    error_of(client.post("/v1/detect", data={"file": "just text"}), 415, "unsupported_media_type")  # a urlencoded form
    error_of(client.post("/v1/detect", content=png(), headers={"content-type": "image/png"}), 415, "unsupported_media_type")
    error_of(client.post("/v1/detect", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}), 400, "bad_multipart")
    error_of(client.post("/v1/detect?localize=maybe", files={"file": ("a.png", png())}), 422, "bad_request")
    error_of(client.post("/v1/detect", content=b"", headers={"content-length": "abc", **j}), 400, "bad_request")


def test_api_key():
    client, _ = start(ServiceConfig(localizer=None, api_key="s3cret"))
    try:
        data = {"file": ("a.png", png())}
        error_of(client.post("/v1/detect", files=data), 401, "unauthorized")
        error_of(client.post("/v1/detect", files=data, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        error_of(client.get("/v1/models"), 401, "unauthorized")
        error_of(client.post("/v1/detect/batch", files=[("file", data["file"])]), 401, "unauthorized")
        assert client.post("/v1/detect", files=data, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200
        # health checks and the page stay open (the page asks for the key)
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/").status_code == 200
        schema = client.get("/openapi.json").json()
        assert any(s.get("in") == "header" and s.get("name") == "X-API-Key"
                   for s in schema["components"]["securitySchemes"].values())
    finally:
        client.__exit__(None, None, None)


def test_timeout_then_recovers():
    det = StubDetector()
    client, _ = start(ServiceConfig(localizer=None, request_timeout_s=1.0, batch_window_ms=0), det)
    try:
        det.gate.clear()  # the model never finishes this batch while the request waits
        # answered at the deadline: the model cannot have finished
        error_of(client.post("/v1/detect", files={"file": ("a.png", png())}), 504, "timeout")
        det.gate.set()  # the abandoned batch finishes; the worker carries on
        assert client.post("/v1/detect", files={"file": ("a.png", png())}).status_code == 200
    finally:
        det.gate.set()
        client.__exit__(None, None, None)


def test_inflight_limit_answers_busy():
    det = StubDetector(delay=0.5)
    client, _ = start(ServiceConfig(localizer=None, max_inflight=1, batch_window_ms=0), det)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/v1/detect", files={"file": ("a.png", png())})
            time.sleep(0.2)  # the first request now holds the only slot
            r = client.post("/v1/detect", files={"file": ("b.png", png())})
            assert first.result().status_code == 200
        error_of(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
    finally:
        client.__exit__(None, None, None)


def test_not_ready_until_loaded_and_load_failure():
    gate = threading.Event()
    det = StubDetector()

    def slow_loader(cfg):
        assert gate.wait(30)
        return Models(det, None)

    with TestClient(create_app(ServiceConfig(localizer=None), loader=slow_loader)) as client:
        assert client.get("/healthz").status_code == 200  # alive at once
        assert "loading" in error_of(client.get("/readyz"), 503, "not_ready")
        error_of(client.post("/v1/detect", files={"file": ("a.png", png())}), 503, "not_ready")
        error_of(client.get("/v1/models"), 503, "not_ready")
        gate.set()
        wait_ready(client, 30)
        assert client.post("/v1/detect", files={"file": ("a.png", png())}).status_code == 200

    def broken_loader(cfg):
        raise FileNotFoundError("no detector.json in /nowhere")

    with TestClient(create_app(ServiceConfig(localizer=None), loader=broken_loader)) as client:
        time.sleep(0.2)
        assert "failed to load" in error_of(client.get("/readyz"), 503, "not_ready")
        assert client.get("/healthz").status_code == 200


def test_unexpected_errors_are_500_without_trace():
    client, det = start(ServiceConfig(localizer=None), raise_server_exceptions=False)
    try:
        det.fail = True
        r = client.post("/v1/detect", files={"file": ("a.png", png())})
        error_of(r, 500, "internal_error")
        assert "secret internal detail" not in r.text
        det.fail = False
        assert client.post("/v1/detect", files={"file": ("a.png", png())}).status_code == 200  # worker survived
    finally:
        client.__exit__(None, None, None)


def test_uploads_stay_in_memory_unless_kept(tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where a spooled upload would land
    kept = tmp_path / "kept"
    big = png(800, 800, seed=5)  # ~1.9 MB: above Starlette's 1 MB in-memory spool by default
    assert len(big) > 1_200_000
    for keep in (None, kept):
        client, _ = start(ServiceConfig(localizer=None, max_upload_bytes=4_000_000, keep_uploads_dir=keep and str(kept)))
        try:
            r = client.post("/v1/detect", files={"file": ("big.png", big)})
            assert r.status_code == 200, r.text
            client.post("/v1/detect", files={"file": ("bad.jpg", b"nope")})
        finally:
            client.__exit__(None, None, None)
        assert list(spool.iterdir()) == []
    assert [p.name for p in kept.iterdir()] == [r.json()["sha256"] + ".png"]  # only the accepted image


class StubLocalizer:
    """predict_maps: a left-to-right ramp at each image's size, so the PNGs can be checked."""

    def __init__(self):
        self.spec, self.threshold, self.calls = parse_spec("vit-s14-focus"), 0.5, []

    def predict_maps(self, images):
        self.calls.append([im.size for im in images])
        return [np.tile(np.linspace(0, 1, im.width, dtype=np.float32), (im.height, 1)) for im in images]


def test_maps_as_pngs_and_large_images_shrunk():
    det, loc = StubDetector(), StubLocalizer()
    cfg = ServiceConfig(localizer="my_loc", map_max_side=500, max_pixels=5_000_000, max_upload_bytes=8_000_000)
    with TestClient(create_app(cfg, loader=lambda c: Models(det, loc))) as client:
        wait_ready(client)
        assert client.get("/v1/models").json()["localizer"] == {"id": "my_loc", "backbone": "vit-s14-focus", "threshold": 0.5}
        small = client.post("/v1/detect", files={"file": ("s.png", png(40, 30))}).json()
        big = client.post("/v1/detect", files={"file": ("b.png", png(1500, 1000))}).json()
        off = client.post("/v1/detect?localize=false", files={"file": ("s.png", png(40, 30))}).json()
    for res, size in ((small, (40, 30)), (big, (500, 333))):
        mask = Image.open(io.BytesIO(base64.b64decode(res["mask_png"])))
        over = Image.open(io.BytesIO(base64.b64decode(res["overlay_png"])))
        assert (mask.mode, mask.size, over.mode, over.size) == ("L", size, "RGB", size)
        row = np.asarray(mask)[0]
        assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row.astype(int)) >= 0)  # the ramp, 0..255
        assert res["localizer"] == "my_loc" and res["map_score"] == res["map_max"] and 0.9 < res["map_max"] <= 1.0
        assert res["map_mean"] == pytest.approx(0.5, abs=0.01) and res["timing_ms"]["render"] is not None
    assert big["score"] is not None and loc.calls[-1] == [(500, 333)]  # the localiser saw the shrunk image
    assert off["mask_png"] is None and off["localizer"] is None and off["score"] == small["score"]


# ---------------------------------------------------------------- micro-batching
def test_batcher_collects_within_the_window():
    sizes = []

    def fn(items):
        sizes.append(len(items))
        return [x * 10 for x in items]

    async def run(window_ms, max_size, n=10):
        b = MicroBatcher(fn, window_ms=window_ms, max_size=max_size)
        b.start()
        try:
            outs = await asyncio.gather(*(b.submit(i) for i in range(n)))
        finally:
            await b.stop()
        return outs, b.stats

    outs, stats = asyncio.run(run(window_ms=50, max_size=4))
    assert [o for o, _ in outs] == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2] and stats["batches"] == 3 and stats["mean_batch_size"] == pytest.approx(10 / 3, abs=1e-3)
    assert [info.size for _, info in outs] == [4] * 8 + [2] * 2
    sizes.clear()
    asyncio.run(run(window_ms=0, max_size=1))  # batching off: one forward per request
    assert sizes == [1] * 10


def test_batcher_drops_abandoned_requests_and_survives_errors():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "boom" in items:
            raise ValueError("bad batch")
        return items

    async def run():
        b = MicroBatcher(fn, window_ms=30, max_size=8)
        b.start()
        gone = asyncio.ensure_future(b.submit("gone"))
        await asyncio.sleep(0)
        gone.cancel()  # its client timed out before the window closed
        kept = await b.submit("kept")
        with pytest.raises(ValueError):
            await b.submit("boom")
        after = await b.submit("after")
        await b.stop()
        return kept, after

    kept, after = asyncio.run(run())
    assert kept[0] == "kept" and after[0] == "after"
    assert calls == [["kept"], ["boom"], ["after"]]


def test_concurrent_requests_share_a_forward_and_the_loop_stays_free():
    det = StubDetector()
    client, _ = start(ServiceConfig(localizer=None, batch_window_ms=30, max_batch_size=32), det)
    try:
        n = 8
        det.gate.clear()  # the model holds its first batch until the health check has answered
        with ThreadPoolExecutor(n + 1) as pool:
            futures = [pool.submit(client.post, "/v1/detect", files={"file": (f"{i}.png", png(seed=i))})
                       for i in range(n)]
            try:
                time.sleep(0.1)  # the first batch is now computing in the worker thread
                health = pool.submit(client.get, "/healthz")
                # a blocked event loop would answer only after the model: the timeout guards a hang, it measures nothing
                assert health.result(timeout=60).status_code == 200
                assert not any(f.done() for f in futures)  # ... and the model had not finished
            finally:
                det.gate.set()
            results = [f.result() for f in futures]
        assert all(r.status_code == 200 for r in results)
        assert sum(det.batches) == n and len(det.batches) < n and max(det.batches) > 1, det.batches
        sizes = [r.json()["batch_size"] for r in results]
        assert max(sizes) == max(det.batches)
        stats = client.get("/v1/models").json()["batching"]
        assert stats["images"] == n + 0 and stats["batches"] == len(det.batches)
    finally:
        client.__exit__(None, None, None)


# ---------------------------------------------------------------- schema
def test_openapi_schema_matches_the_endpoints(stub):
    client, _ = stub
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/detect", "/v1/detect/batch", "/v1/models", "/healthz", "/readyz"} <= set(paths)
    assert "/" not in paths and "securitySchemes" not in schema.get("components", {})  # no key configured
    one = paths["/v1/detect"]["post"]
    content = one["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert content["application/json"]["schema"]["required"] == ["image"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Detection")
    assert {"413", "415", "422", "400", "504", "503"} <= set(one["responses"])
    assert [p["name"] for p in one["parameters"]] == ["localize"]
    batch = paths["/v1/detect/batch"]["post"]
    assert batch["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["file"]["type"] == "array"
    assert "images" in batch["requestBody"]["content"]["application/json"]["schema"]["properties"]
    detection = schema["components"]["schemas"]["Detection"]["properties"]
    for key in ("score", "label", "threshold", "model", "model_version", "mask_png", "map_score", "timing_ms"):
        assert key in detection
    assert "ErrorBody" in schema["components"]["schemas"]
    assert "get" in paths["/v1/models"] and "get" in paths["/readyz"]


# ---------------------------------------------------------------- the command
def test_serve_command_and_lazy_import(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from fakescope.cli import app

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: runs.append((asgi, kw)))
    monkeypatch.delenv("FAKESCOPE_API_KEY", raising=False)
    r = CliRunner().invoke(app, ["serve", "--localizer", "none", "--max-batch-size", "1"])
    assert r.exit_code == 0, r.output
    asgi, kw = runs[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000 and "warning" not in r.output  # loopback by default
    cfg = asgi.state.service.config
    assert cfg.localizer is None and cfg.max_batch_size == 1 and cfg.api_key is None and cfg.keep_uploads_dir is None
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--localizer", "none"])
    assert r.exit_code == 0 and "without an API key" in r.output
    monkeypatch.setenv("FAKESCOPE_API_KEY", "from-env")
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--localizer", "none"])
    assert "without an API key" not in r.output and runs[-1][0].state.service.config.api_key == "from-env"

    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--localizer" in r.output and "--api-key" in r.output
    r = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such model folder" in r.output
    code = "import sys, fakescope.cli; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the core CLI works without the server extra


# ---------------------------------------------------------------- the real models
@pytest.mark.slow
@pytest.mark.offline_models
def test_same_scores_and_maps_as_scan(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("efficientnet_lite_pytorch")
    from typer.testing import CliRunner

    from fakescope.cli import app

    files = [EXAMPLES[0], EXAMPLES[5], EXAMPLES[-1]]
    out = tmp_path / "scan.jsonl"
    r = CliRunner().invoke(app, ["scan", *map(str, files), "--out", str(out), "--localize", "--no-table"])
    assert r.exit_code == 0, r.output
    scanned = {Path(rec["path"]).name: rec for rec in map(json.loads, out.read_text().splitlines())}

    with TestClient(create_app(ServiceConfig())) as client:
        wait_ready(client)
        info = client.get("/v1/models").json()
        assert info["detector"]["id"] == "fakescope-default" and info["localizer"] is not None
        from fakescope.detector import load_detector
        rule = load_detector(None).uncertainty  # the shipped default answers "uncertain" between its cuts
        assert info["detector"]["uncertain_band"] == pytest.approx([rule.low, rule.high])
        batch = client.post("/v1/detect/batch", files=[("file", (f.name, f.read_bytes(), "image/jpeg")) for f in files])
        assert batch.status_code == 200, batch.text
        single = client.post("/v1/detect", files={"file": (files[0].name, files[0].read_bytes())}).json()
        plain = client.post("/v1/detect?localize=false", files={"file": (files[0].name, files[0].read_bytes())}).json()
    for res in batch.json()["results"] + [single]:
        rec = scanned[res["filename"]]
        assert res["score"] == pytest.approx(rec["score"], abs=1e-5)
        assert res["label"] == rec["label"] and res["threshold"] == rec["threshold"]
        assert (res["model"], res["model_version"]) == (rec["model"], rec["model_version"])
        # map_score is the image-level edit score (the localiser's image rule), as scan's edit_score
        assert res["map_score"] == pytest.approx(rec["edit_score"], abs=1e-4)
        assert res["edited"] == rec["edited"]
        assert res["map_max"] == pytest.approx(rec["map_max"], abs=1e-4)
        assert res["map_mean"] == pytest.approx(rec["map_mean"], abs=1e-4)
        mask = Image.open(io.BytesIO(base64.b64decode(res["mask_png"])))
        over = Image.open(io.BytesIO(base64.b64decode(res["overlay_png"])))
        size = Image.open(rec["path"]).size
        assert mask.mode == "L" and mask.size == size and over.mode == "RGB" and over.size == size
    assert plain["mask_png"] is None and plain["map_score"] is None and plain["score"] == pytest.approx(single["score"], abs=1e-5)
