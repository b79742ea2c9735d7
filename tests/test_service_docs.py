"""/docs: the OpenAPI page served by the app itself, with no CDN: every script, stylesheet and
icon it references is a local path that the app answers."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
if __import__("importlib.util").util.find_spec("fastapi_offline") is None:
    pytest.skip("/docs needs the server extra's fastapi-offline", allow_module_level=True)
from fastapi.testclient import TestClient  # noqa: E402

from fakescope.service.app import ServiceConfig, create_app  # noqa: E402


def test_docs_page_uses_only_local_assets():
    client = TestClient(create_app(ServiceConfig(), loader=lambda cfg: None))
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: ?'([^']+)'", page.text)
    assert any(r.endswith("swagger-ui-bundle.js") for r in refs) and any(r.endswith(".css") for r in refs)
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref  # nothing from another host
        got = client.get(ref)
        assert got.status_code == 200 and got.content, ref
    assert "/openapi.json" in refs
    assert "cdn" not in page.text.lower()


def test_web_page_static_files_still_served():
    client = TestClient(create_app(ServiceConfig(), loader=lambda cfg: None))
    assert client.get("/").status_code == 200
    assert client.get("/static/swagger/no-such-file.js").status_code == 404
