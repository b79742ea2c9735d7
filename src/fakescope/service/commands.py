"""`fakescope serve`: run the service (app.py) under uvicorn. FastAPI is imported only here,
inside the command, so the CLI works without the `server` extra."""
from __future__ import annotations

import logging
import ipaddress
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..clitools import choice, value
from ..hub import parse_hub_id

err = Console(stderr=True)
log = logging.getLogger(__name__)  # shown by the CLI at its --quiet/--verbose level
EXIT_USAGE = 2
LogLevel = choice("LogLevel", ["critical", "error", "warning", "info", "debug"])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Detector folder or Hugging Face Hub id user/repo[@revision]; default: the shipped model."),
    localizer: str = typer.Option("default", "--localizer", help="Heatmaps: 'default' (the shipped localiser, about "
                                  "0.2 s per image on 2 cores), 'none' (scores only, faster), or a localiser folder."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. The default answers this machine only."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FAKESCOPE_API_KEY", show_default=False,
                                          help="Require this value in the X-API-Key header for /v1/*. Prefer the "
                                               "FAKESCOPE_API_KEY variable: a flag is visible in `ps`."),
    max_upload_bytes: int = typer.Option(25 * 2**20, help="Largest accepted image file (413 above)."),
    max_batch_bytes: int = typer.Option(100 * 2**20, help="Largest body of a batch request (413 above)."),
    max_pixels: int = typer.Option(50_000_000, help="Most pixels (width x height) an image may declare (413 above)."),
    max_batch_files: int = typer.Option(16, help="Most files in one batch request (413 above)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds a request may take, upload included (504 after)."),
    max_inflight: int = typer.Option(64, help="Requests served at once; more are answered 503 busy."),
    max_pixels_in_flight: int = typer.Option(100_000_000, help="Decoded pixels at once over all uploads; more wait their turn (bounds memory)."),
    batch_window_ms: float = typer.Option(5.0, help="Micro-batching: ms to wait for concurrent requests to join a batch."),
    max_batch_size: int = typer.Option(32, help="Micro-batching: most requests per batch (forwards inside run at the detector's batch size); 1 turns it off."),
    keep_uploads: Optional[Path] = typer.Option(None, "--keep-uploads", help="Save every accepted upload in this folder "
                                                "(<sha256>.<ext>). Without it nothing uploaded is written to disk."),
    max_connections: int = typer.Option(512, help="Open connections at once, idle ones included; more are answered 503."),
    header_timeout: float = typer.Option(10.0, help="Seconds a connection may take to send a request's headers "
                                         "before it is closed (idle and slow-header connections)."),
    keep_alive: float = typer.Option(5.0, help="Seconds an idle keep-alive connection stays open."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Answer only requests whose Host header is "
                                           "this name (repeatable; *.example.org works); default: any."),
    provenance: str = typer.Option("decide", "--provenance", help="off, report (a provenance object per answer) or decide (also: a valid C2PA or metadata AI claim makes the verdict fake), as for scan."),
    max_video_bytes: int = typer.Option(0, help="Largest accepted video upload (0: the image limit)."),
    max_video_seconds: float = typer.Option(600.0, help="Longest accepted video (413 above)."),
    video_frames: int = typer.Option(16, help="Frames sampled per video upload, scored in the same micro-batches."),
    log_level: LogLevel = typer.Option("info", help="uvicorn's log level."),
):
    """Serve the detector over HTTP: a web page at /, the API under /v1 (schema at /openapi.json).

    POST /v1/detect (multipart field `file`, or JSON {"image": base64}), POST /v1/detect/batch,
    GET /v1/models, GET /healthz, GET /readyz (200 once the models are loaded)."""
    try:
        import uvicorn

        from .app import ServiceConfig, create_app, server_options
    except ImportError as e:
        err.print(f"[red]fakescope serve needs the server extra[/red] (pip install 'fakescope[server]'): {e}")
        raise typer.Exit(EXIT_USAGE)
    # Models load after the server starts (so /healthz answers at once); catch a wrong path now.
    for what, ref in (("model", model), ("localizer", localizer)):
        if ref not in (None, "", "default", "none") and not Path(ref).is_dir() and parse_hub_id(ref) is None:
            err.print(f"[red]no such {what} folder:[/red] {ref}")
            raise typer.Exit(EXIT_USAGE)
    if max_batch_size < 1 or batch_window_ms < 0 or timeout <= 0 or max_connections < 1 or header_timeout <= 0 \
            or keep_alive <= 0:
        err.print("[red]--max-batch-size and --max-connections must be >= 1, --batch-window-ms >= 0, and "
                  "--timeout, --header-timeout and --keep-alive > 0[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not _is_loopback(host) and not api_key:
        log.warning(f"listening on {host} without an API key: anyone who can reach this "
                  "port can use the service. Set FAKESCOPE_API_KEY (or --api-key).")
    from ..provenance import MODES
    if provenance not in MODES:
        raise typer.BadParameter(f"must be one of {', '.join(MODES)}", param_hint="--provenance")
    cfg = ServiceConfig(model=model, localizer=None if localizer == "none" else localizer, api_key=api_key or None,
                        max_upload_bytes=max_upload_bytes, max_batch_bytes=max_batch_bytes, max_pixels=max_pixels,
                        max_batch_files=max_batch_files, request_timeout_s=timeout, max_inflight=max_inflight,
                        max_pixels_in_flight=max_pixels_in_flight, provenance=provenance,
                        max_video_bytes=max_video_bytes, max_video_seconds=max_video_seconds, video_frames=video_frames,
                        batch_window_ms=batch_window_ms, max_batch_size=max_batch_size,
                        keep_uploads_dir=str(keep_uploads) if keep_uploads else None,
                        max_connections=max_connections, header_timeout_s=header_timeout, keep_alive_s=keep_alive,
                        allowed_hosts=tuple(allowed_host))
    shown = f"[{host}]" if ":" in host else host
    log.info(f"fakescope: web page and API on http://{shown}:{port}/ (models loading; /readyz says when ready)")
    uvicorn.run(create_app(cfg), **server_options(cfg, host, port, value(log_level)))
