"""The HTTP service under hostile and careless use (issue 18, cases 3, 4, 10 and 13)."""
from __future__ import annotations

import errno
import http.client
import os
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from fakescope.backbones import parse_spec  # noqa: E402
from fakescope.detector import Result  # noqa: E402
from fakescope.images import DEFAULT_LIMITS  # noqa: E402
from fakescope.pipeline import prepare  # noqa: E402
from fakescope.service.app import Models, ServiceConfig, create_app, server_options  # noqa: E402

from .conftest import png_bytes  # noqa: E402


class Stub:
    """The detector surface the service uses; score = mean preprocessed pixel, squashed to 0..1."""

    def __init__(self):
        self.spec = parse_spec("effnet-lite0")
        self.threshold, self.id, self.version = 0.5, "stub", "1"

    def prepare_item(self, sample, limits=DEFAULT_LIMITS):  # Detector.prepare_item: nothing deferred
        return prepare(sample, self.spec, (0,), limits)[0]

    def predict_batch(self, items):
        return [Result(it.sample.path, it.sha256, float(np.clip(it.array.mean() * 0.25 + 0.5, 0, 1)) if it.ok else None,
                       "real" if it.ok else None, 0.5, "stub", "1", it.error) for it in items]


def client_for(cfg: ServiceConfig, loader=None, host: str = "testserver") -> TestClient:
    c = TestClient(create_app(cfg, loader=loader or (lambda _: Models(Stub(), None))), base_url=f"http://{host}")
    c.__enter__()
    for _ in range(600):  # bounded: the stub loads at once
        if c.get("/readyz").status_code == 200 or loader is not None:
            break
        time.sleep(0.01)
    return c


@pytest.fixture
def served():
    """A real uvicorn on a free loopback port, with short header and keep-alive timeouts."""
    cfg = ServiceConfig(localizer=None, header_timeout_s=0.5, keep_alive_s=1, max_connections=50)
    config = uvicorn.Config(create_app(cfg, loader=lambda _: Models(Stub(), None)),
                            **{**server_options(cfg, "127.0.0.1", 0, "warning")})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port
    server.should_exit = True
    thread.join(10)


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection; False if it is still open after 20 reads of 0.5 s."""
    sock.settimeout(0.5)
    for _ in range(20):
        try:
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


def test_case3_idle_and_slow_header_connections_are_closed(served):
    idle = socket.create_connection(("127.0.0.1", served))
    slow = socket.create_connection(("127.0.0.1", served))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished (slowloris)
    try:
        assert _closed_by_server(idle)
        assert _closed_by_server(slow)
    finally:
        idle.close()
        slow.close()
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200  # and the server keeps answering
    conn.close()


def test_case3_serve_sets_the_connection_limits():
    opts = server_options(ServiceConfig(max_connections=7, keep_alive_s=3, header_timeout_s=2))
    assert opts["limit_concurrency"] == 7 and opts["timeout_keep_alive"] == 3 and opts["http"] is not None


def test_case4_readyz_says_what_failed_without_local_paths(caplog):
    def broken(_):
        raise FileNotFoundError("/srv/secret/models/detector.json: no such file")

    c = client_for(ServiceConfig(localizer=None), loader=broken)
    try:
        for _ in range(500):
            r = c.get("/readyz")
            if "failed" in r.text:
                break
            time.sleep(0.01)
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["detail"]
        assert "/srv/secret" not in r.text and "FileNotFoundError" not in r.text
    finally:
        c.__exit__(None, None, None)
    assert "/srv/secret" in caplog.text  # the details went to the log


@pytest.mark.parametrize("route,body", [("/v1/detect", b"[" * 100_000 + b"]" * 100_000),
                                        ("/v1/detect/batch", b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")])
def test_case10_deeply_nested_json_is_a_400(route, body):
    c = client_for(ServiceConfig(localizer=None))
    try:
        r = c.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json", r.text[:200]
    finally:
        c.__exit__(None, None, None)


def test_case10_a_full_disk_keeps_the_score_and_leaves_no_empty_file(tmp_path, monkeypatch):
    kept = tmp_path / "kept"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    c = client_for(ServiceConfig(localizer=None, keep_uploads_dir=str(kept)))
    try:
        monkeypatch.setattr(os, "fsync", full)  # the disk fills up as the upload is stored
        r = c.post("/v1/detect", files={"file": ("a.png", png_bytes(1, 40))})
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        assert r.json()["result"]["score"] is not None
        r = c.post("/v1/detect/batch", files=[("file", ("a.png", png_bytes(2, 40))), ("file", ("b.png", png_bytes(3, 40)))])
        assert r.status_code == 200
        assert all(x["score"] is not None and x["error"]["code"] == "insufficient_storage" for x in r.json()["results"])
        monkeypatch.undo()
        assert list(kept.iterdir()) == []  # no 0-byte file, no temp file
        assert c.post("/v1/detect", files={"file": ("a.png", png_bytes(1, 40))}).status_code == 200
        assert len(list(kept.iterdir())) == 1
    finally:
        c.__exit__(None, None, None)


def test_case13_api_answers_are_not_cached_or_sniffed():
    c = client_for(ServiceConfig(localizer=None))
    try:
        for r in (c.get("/healthz"), c.get("/readyz"), c.get("/v1/models"),
                  c.post("/v1/detect", files={"file": ("a.png", png_bytes(1, 40))}),
                  c.post("/v1/detect", content=b"x", headers={"content-type": "text/plain"})):
            assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    finally:
        c.__exit__(None, None, None)


def test_case13_allowed_hosts():
    c = client_for(ServiceConfig(localizer=None, allowed_hosts=("detect.example.org",)), host="detect.example.org")
    try:
        assert c.get("/healthz", headers={"host": "evil.example.com"}).status_code == 400
        assert c.get("/healthz", headers={"host": "detect.example.org"}).status_code == 200
    finally:
        c.__exit__(None, None, None)


def test_case12_decoded_pixels_in_flight_are_bounded(monkeypatch):
    """Four uploads of 100x100 arrive at once with a budget of 15,000 decoded pixels: they are
    decoded one at a time (without the budget, the thread pool decodes them together)."""
    import asyncio

    from fakescope.service import app as service_app
    from fakescope.service.batcher import PixelBudget

    svc = service_app.Service(ServiceConfig(max_pixels_in_flight=15_000), loader=lambda cfg: None)
    now, most = [0], [0]
    lock = threading.Lock()

    def prepare(name, data, localize):  # stands in for the decode: counts who is decoding at once
        with lock:
            now[0] += service_app._declared_pixels(data)
            most[0] = max(most[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= service_app._declared_pixels(data)
        raise service_app.ServiceError(422, "stop", "the test ends each request here")

    monkeypatch.setattr(svc, "_prepare", prepare)
    upload = png_bytes(0, size=100)
    assert service_app._declared_pixels(upload) == 10_000
    assert service_app._declared_pixels(b"not an image") == 0

    async def four():
        return await asyncio.gather(*(svc.detect(f"{i}.png", upload, False, time.perf_counter()) for i in range(4)),
                                    return_exceptions=True)

    results = asyncio.run(four())
    assert all(isinstance(r, service_app.ServiceError) for r in results)
    assert most[0] == 10_000 and svc.pixels.used == 0  # one at a time, and every hold given back

    async def budget_never_exceeded():
        b, peak = PixelBudget(100), [0]

        async def job(n):
            held = await b.acquire(n)
            peak[0] = max(peak[0], b.used)
            await asyncio.sleep(0.01)
            await b.release(held)
        await asyncio.gather(*(job(n) for n in (60, 60, 30, 250, 10)))  # 250 > budget: runs alone, held as 100
        return peak[0], b.used

    assert asyncio.run(budget_never_exceeded()) == (100, 0)
