"""`fakescope serve`: the detector (and localiser) over HTTP, with a web page at `/`.

Needs the `server` extra (FastAPI, uvicorn, python-multipart). Importing this package does
not import FastAPI, so the rest of the CLI works without the extra:

    from fakescope.service import ServiceConfig, create_app
    app = create_app(ServiceConfig(localizer=None, api_key="..."))   # any ASGI server can run it

app.py: routes, limits, errors; batcher.py: micro-batching; schemas.py: JSON shapes;
commands.py: the CLI command; static/: the page (plain HTML + JS + CSS, nothing external).
"""
from __future__ import annotations


def __getattr__(name):  # FastAPI loads only when the service is actually asked for
    if name in ("ServiceConfig", "create_app", "Models", "load_models"):
        from . import app
        return getattr(app, name)
    raise AttributeError(name)


__all__ = ["ServiceConfig", "Models", "create_app", "load_models"]
