"""The HTTP service: a FastAPI app over one Detector and, optionally, one Localizer.

    POST /v1/detect          one image: multipart field `file`, or JSON {"image": "<base64>"}
    POST /v1/detect/batch    several: multipart parts `file`, or JSON {"images": [{"image": ...}, ...]}
    GET  /v1/models          what is loaded, the limits, the batching counters
    GET  /healthz            the process answers (200 from the first moment)
    GET  /readyz             the models are loaded and warmed up (503 until then)
    GET  /                   the web page (static/), and /openapi.json

Path of a request: the body is read with a bound (Content-Length first, then bytes counted,
so an oversize upload is refused before it sits in memory) and parsed in memory (multipart,
or JSON + base64; nothing touches the disk unless `keep_uploads_dir` asks for it). Each file
is decoded and preprocessed in a thread by `Detector.prepare_item`, as `fakescope scan`
prepares it, so a file scores the same here as there. The micro-batcher then runs
`Detector.predict_batch` (and the localiser) once for all concurrent requests; PNGs are
encoded in a thread; the answer is JSON.

Every refusal is `{"error": {"code": "...", "detail": "..."}}` with a 4xx status (5xx for
not ready, busy, timeout and internal errors); no stack trace ever leaves the process.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .. import __version__
from ..data.samples import IMAGE_SUFFIXES, Sample
from ..images import ImageError, ImageLimits, decode_image
from ..pipeline import Item
from . import schemas
from .batcher import MicroBatcher, PixelBudget

log = logging.getLogger("fakescope.service")
API_KEY_HEADER = "X-API-Key"
STATIC = Path(str(resources.files("fakescope") / "service" / "static"))
# The page may load only what this server serves; images also come as data: and blob: URLs.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class ServiceConfig:
    model: str | None = None              # detector folder; None: the shipped default
    localizer: str | None = "default"     # "default": the shipped localiser; None or "none": no maps; or a folder
    # ---- limits: each refusal is a clear 4xx JSON error, never a crash
    max_upload_bytes: int = 25 * 2**20    # one image file; more -> 413 too_large (counted while reading)
    max_batch_bytes: int = 100 * 2**20    # the whole body of a batch request (base64 JSON needs 4/3 of the files)
    max_pixels: int = 50_000_000          # width x height from the header, checked before decoding -> 413
    max_batch_files: int = 16             # files in one batch request -> 413 too_many_files
    request_timeout_s: float = 30.0       # a request, from reading its body to its answer -> 504 timeout
    max_inflight: int = 64                # requests served at once; more -> 503 busy (bounds memory under a flood)
    max_pixels_in_flight: int = 100_000_000  # decoded pixels at once over all uploads; more wait their turn
    max_connections: int = 512            # open connections (idle ones included); more are answered 503 by uvicorn
    header_timeout_s: float = 10.0        # a connection must send a request's headers within this, else it is closed
    keep_alive_s: float = 5.0             # an idle keep-alive connection is closed after this
    # ---- evidence beyond pixels (README "Provenance", "Video")
    provenance: str = "decide"            # off, report or decide: provenance.py's rule, as `scan --provenance`
    max_video_bytes: int = 0              # one video upload; 0: max_upload_bytes (videos are told by their bytes)
    max_video_seconds: float = 600.0      # longer videos -> 413 video_too_long
    video_frames: int = 16                # frames sampled per video, scored in the same micro-batches
    # ---- micro-batching (see batcher.py)
    batch_window_ms: float = 5.0          # how long to wait for company after the first request; 0: only who waits
    max_batch_size: int = 32              # requests per trip to the model thread; 1 turns micro-batching off.
                                          # Inside a trip, forwards run at the detector's batch size, as in scan
    # ---- maps
    map_max_side: int = 1024              # larger images are shrunk to this longest side for the localiser and
                                          # its PNGs (its map is 16x16 patches upsampled: nothing is lost)
    # ---- security
    api_key: str | None = None            # when set, /v1/* needs the header X-API-Key with this value
    keep_uploads_dir: str | None = None   # when set, every accepted upload is saved there as <sha256><ext>;
                                          # by default nothing uploaded is written to disk
    allowed_hosts: tuple[str, ...] = ()   # when set, requests whose Host header is not one of these get 400
                                          # (a deployment behind a name; "*.example.org" patterns work)

    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels)


@dataclass
class Models:
    detector: Any                         # fakescope.detector.Detector (or anything with its predict_batch)
    localizer: Any = None                 # fakescope.localize.Localizer, or None


def load_models(config: ServiceConfig) -> Models:
    from ..detector import load_detector

    loc = None
    if config.localizer not in (None, "", "none"):
        from ..localize.evaluate import load_localizer
        loc = load_localizer(None if config.localizer == "default" else config.localizer)
    return Models(load_detector(config.model), loc)


class ServiceError(Exception):
    """A refusal with its HTTP status; turned into the JSON error body by the app's handler."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class KeepFailed(ServiceError):
    """The image was scored but --keep-uploads could not store it: 507 with the result attached."""

    def __init__(self, result: dict, detail: str):
        super().__init__(507, "insufficient_storage", detail)
        self.result = result


def error_response(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "detail": detail}}, status_code=status, headers=headers)


# ImageError codes (images.py, pipeline.py) -> HTTP status.
IMAGE_STATUS = {"too_large": 413, "too_many_pixels": 413, "not_an_image": 415, "empty": 422, "truncated": 422,
                "unreadable": 422, "preprocess_failed": 422, "missing_text": 422,
                "video_too_long": 413, "video_unsupported": 415, "video_corrupt": 422, "video_empty": 422,
                "video_frames_failed": 422}


def image_error(reason: str) -> ServiceError:
    """'<code>: <detail>' (Item.error, ImageError.reason) -> the matching 4xx."""
    code, _, detail = reason.partition(": ")
    return ServiceError(IMAGE_STATUS.get(code, 422), code, detail or reason)


# ---------------------------------------------------------------- reading requests
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise ServiceError(413, "too_large", f"request body is {int(declared):,} bytes, over the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():  # chunked uploads have no Content-Length: count as they come
        body += chunk
        if len(body) > limit:
            raise ServiceError(413, "too_large", f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


def _clean_name(name: Any) -> str | None:
    """A filename for echoing back only: no directories, bounded length."""
    if not isinstance(name, str) or not name:
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1][:255] or None


async def _multipart(request: Request, body: bytes, max_files: int) -> list[tuple[str | None, bytes]]:
    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=100, max_part_size=64 * 1024)
    parser.spool_max_size = len(body) + 1  # file parts stay in memory (the body is already bounded)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        if "Too many files" in e.message:
            raise ServiceError(413, "too_many_files", f"more than {max_files} file(s) in one request"
                               + ("; use /v1/detect/batch for several" if max_files == 1 else "")) from None
        raise ServiceError(400, "bad_multipart", e.message) from None
    files = []
    try:
        for key, value in form.multi_items():
            if key in ("file", "files") and isinstance(value, UploadFile):
                files.append((_clean_name(value.filename), await value.read()))
    finally:
        await form.close()
    return files


def _b64(text: str) -> bytes:
    if text.startswith("data:"):  # a data URL, as FileReader.readAsDataURL gives it
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(400, "bad_base64", "`image` is not valid base64") from None


def _json_uploads(body: bytes, many: bool, max_files: int) -> list[tuple[str | None, bytes]]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError(400, "bad_json", "the body is not valid JSON") from None
    except RecursionError:  # thousands of nested brackets: not an upload, and not worth a 500
        raise ServiceError(400, "bad_json", "the JSON is nested too deeply") from None
    shape = '{"images": [{"image": "<base64>", "filename": "..."}, ...]}' if many else \
        '{"image": "<base64>", "filename": "..."}'
    if many:
        entries = doc.get("images") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise ServiceError(400, "bad_json", f"expected {shape}")
        if len(entries) > max_files:
            raise ServiceError(413, "too_many_files", f"{len(entries)} images, over the limit of {max_files} per request")
    else:
        entries = [doc]
    out = []
    for e in entries:
        e = {"image": e} if many and isinstance(e, str) else e
        if not isinstance(e, dict) or not isinstance(e.get("image"), str):
            raise ServiceError(400, "bad_json", f"expected {shape}")
        out.append((_clean_name(e.get("filename")), _b64(e["image"])))
    return out


async def read_uploads(request: Request, limit: int, many: bool, max_files: int) -> list[tuple[str | None, bytes]]:
    """(filename, bytes) per uploaded file. The declared type picks the parser only; what a file
    is gets decided later by decoding it."""
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        files = await _multipart(request, body, max_files)
    elif kind == "application/json" or kind.endswith("+json"):
        files = await asyncio.to_thread(_json_uploads, body, many, max_files)  # 100 MB of JSON: not on the loop
    else:
        raise ServiceError(415, "unsupported_media_type",
                           "send multipart/form-data with a `file` field, or application/json with base64 `image`")
    if not files:
        raise ServiceError(400, "missing_file", "no file in the request (multipart field `file`, or JSON `image`)")
    if len(files) > max_files:
        raise ServiceError(413, "too_many_files", f"{len(files)} files, over the limit of {max_files} per request")
    return files


# ---------------------------------------------------------------- the model side
@dataclass
class _Job:
    item: Item                       # the detector's input, from Detector.prepare_item
    image: Image.Image | None        # the picture for the localiser; None when no map is wanted
    map_error: str | None = None     # why the localiser could not have it
    keep_error: str | None = None    # --keep-uploads could not store it (disk full, ...); scored all the same
    provenance: dict | None = None   # provenance.read_provenance of the upload (None: mode off)


@dataclass
class _Output:
    result: Any                      # detector.Result
    map: np.ndarray | None = None
    map_error: str | None = None


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)  # fast: this runs per request
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _map_size(img: Image.Image, side: int) -> Image.Image:
    """The picture the localiser reads: at most `side` pixels on its longest side (shrunk in place:
    the caller owns it)."""
    if max(img.size) > side:
        img.thumbnail((side, side), Image.BILINEAR)
    return img


def _declared_pixels(data: bytes) -> int:
    """Width x height from the header (Pillow reads no pixels here); 0 when it cannot be read,
    and decoding then reports what is wrong with the file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # any unreadable or hostile header: the decoder's own error says which
        return 0


class Service:
    """Models, batcher and the work of one request, behind the routes of `create_app`."""

    def __init__(self, config: ServiceConfig, loader: Callable[[ServiceConfig], Models] = load_models):
        self.config = config
        self.loader = loader
        self.models: Models | None = None
        self.load_error: str | None = None
        self.inflight = 0
        self.batcher = MicroBatcher(self._run_batch, config.batch_window_ms, config.max_batch_size)
        self.pixels = PixelBudget(config.max_pixels_in_flight)

    # ------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """Load and warm up the models in a thread; /readyz turns 200 once this finishes."""
        try:
            models = await asyncio.to_thread(self.loader, self.config)
            # in the model thread, whose caches the requests will then find warm
            await asyncio.get_running_loop().run_in_executor(self.batcher.executor, self._warm_up, models)
            self.models = models
            log.info("models ready: %s", self.describe_models(models)["detector"])
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("cannot load the models")

    def _warm_up(self, models: Models) -> None:
        """One tiny image through the whole path, so the first real request is not the slow one."""
        img, buf = Image.new("RGB", (64, 64), (128, 128, 128)), io.BytesIO()
        img.save(buf, format="PNG")
        item = models.detector.prepare_item(Sample(path="<warm-up>", data=buf.getvalue()))
        self._run_batch([_Job(item, img if models.localizer is not None else None)], models)

    # ------------------------------------------------------------ one batch (in the batcher's thread)
    def _run_batch(self, jobs: list[_Job], models: Models | None = None) -> list[_Output]:
        from ..detector import predict_in_forwards
        from ..localize.evaluate import iter_maps

        models = models or self.models
        det = models.detector
        # One micro-batch, forwards of the size `scan` uses (a batch of 32 requests on EfficientNet-Lite0
        # runs as 8 forwards of 4)
        out = [_Output(r) for r in predict_in_forwards(det, [j.item for j in jobs])]
        want = [i for i, j in enumerate(jobs) if j.image is not None and out[i].result.error is None]
        if want and models.localizer is not None:
            for k, m, error in iter_maps(models.localizer, [jobs[i].image for i in want]):
                out[want[k]].map, out[want[k]].map_error = m, error
        return out

    # ------------------------------------------------------------ one file (thread, then batcher, then thread)
    def _prepare(self, name: str | None, data: bytes, localize: bool) -> tuple[_Job, float]:
        t = time.perf_counter()
        models, cfg = self.models, self.config
        # as a scan prepares it: a referee's input is read only if the image needs it (detector.py)
        item = models.detector.prepare_item(Sample(path=name or "upload", data=data), cfg.limits())
        if not item.ok:
            raise image_error(item.error)
        image, map_error = None, None
        if localize and models.localizer is not None:
            try:  # JPEG draft decoding + thumbnail: a 50 MP photo never becomes a 50 MP float map
                image = _map_size(decode_image(data, cfg.limits(), name, draft_size=cfg.map_max_side), cfg.map_max_side)
            except ImageError as e:  # the score stands; only the map is missing
                map_error = e.reason
        job = _Job(item, image, map_error)
        if cfg.provenance != "off":
            from ..provenance import read_provenance
            job.provenance = read_provenance(data, name)
        if cfg.keep_uploads_dir:  # only when asked; named by content, so a re-upload overwrites itself
            from ..scale.outputs import fsync_write
            ext = Path(name or "").suffix.lower()
            path = Path(cfg.keep_uploads_dir) / f"{item.sha256}{ext if ext in IMAGE_SUFFIXES else ''}"
            try:  # whole or absent (temp file + rename): a full disk never leaves a 0-byte file
                path.parent.mkdir(parents=True, exist_ok=True)
                fsync_write(path, data)
            except OSError as e:  # the image is still scored; the answer says it was not kept
                log.error("cannot keep upload %s: %s", path, e)
                job.keep_error = "the server could not store this upload (" + (e.strerror or "write failed") + ")"
        return job, time.perf_counter() - t

    @staticmethod
    def _render(image: Image.Image, prob_map: np.ndarray) -> tuple[str, str]:
        from ..localize.render import overlay

        mask = Image.fromarray(np.round(np.clip(np.nan_to_num(prob_map), 0, 1) * 255).astype(np.uint8))
        # alpha 1: the page fades it over the photo with an opacity slider; at opacity a the
        # picture equals render.overlay(image, map, alpha=a).
        return _png_b64(mask), _png_b64(overlay(image, prob_map, alpha=1.0))

    async def detect(self, name: str | None, data: bytes, localize: bool, started: float) -> dict:
        """One file -> the response object; refusals raise ServiceError."""
        from ..data.video import looks_like_video
        from ..provenance import apply_rule

        if looks_like_video(data):
            return await self.detect_video(name, data, localize, started)
        held = await self.pixels.acquire(_declared_pixels(data))
        try:  # the full-size decode lives only inside _prepare: the job keeps 224 px arrays and a thumbnail
            job, decode_s = await asyncio.to_thread(self._prepare, name, data, localize)
        finally:
            await self.pixels.release(held)
        out, info = await self.batcher.submit(job)
        r = out.result
        if r.error is not None:
            raise image_error(r.error)
        label, reason = apply_rule(r.label, r.reason, job.provenance, self.config.provenance)
        res = {"filename": name, "sha256": r.sha256, "score": r.score, "label": label, "reason": reason,
               "threshold": r.threshold, "model": r.model, "model_version": r.model_version, "error": None,
               "batch_size": info.size, "provenance": job.provenance, "experts": r.experts}
        render_s = None
        if job.map_error is not None:
            res.update(localizer=self.localizer_id(), map_error=job.map_error)
        if job.image is not None:
            res["localizer"] = self.localizer_id()
            if out.map is None:
                res["map_error"] = out.map_error
            else:
                from ..evaluation.localization import map_scores

                t = time.perf_counter()
                from ..localize.verdict import apply as apply_edit_rule

                s = map_scores(out.map)
                res.update(map_score=s["max"], map_mean=s["mean"], map_max=s["max"])
                apply_edit_rule(self.models.localizer, res, out.map)  # as scan --localize: one verdict
                if "edit_score" in res:
                    res["map_score"] = res["edit_score"]
                res["mask_png"], res["overlay_png"] = await asyncio.to_thread(self._render, job.image, out.map)
                render_s = time.perf_counter() - t
        res["timing_ms"] = _ms(decode=decode_s, queue=info.queued_s, model=info.run_s, render=render_s,
                               total=time.perf_counter() - started)
        if job.keep_error is not None:
            raise KeepFailed(res, job.keep_error)
        return res

    async def detect_video(self, name: str | None, data: bytes, localize: bool, started: float) -> dict:
        """A video upload: its sampled frames ride the micro-batcher like images (scan's video_row and
        video_record: the same sampling, limits, aggregate and provenance rules). With `localize`,
        each frame gets its map (scale/video_maps.py rule); the answer's mask and overlay are those
        of the frame with the highest map_max (`map_frame`)."""
        from ..data.video import VideoLimits
        from ..scale.batch import video_record, video_row
        from ..scale.video_maps import frame_entry, summarize

        cfg, det = self.config, self.models.detector
        video = VideoLimits(frames=cfg.video_frames, max_bytes=cfg.max_video_bytes or cfg.max_upload_bytes,
                            max_seconds=cfg.max_video_seconds)
        maps = localize and self.models.localizer is not None
        t = time.perf_counter()
        row = await asyncio.to_thread(video_row, Sample(path=name or "upload", data=data), det.spec, cfg.limits(),
                                      video, cfg.provenance, maps)
        decode_s = time.perf_counter() - t
        if not row.video:
            raise image_error(row.items[0].error)
        frames = [_map_size(f, cfg.map_max_side) for f in row.frames] if maps else [None] * len(row.items)
        row.frames = None  # the thumbnails are enough from here on
        outs = await asyncio.gather(*(self.batcher.submit(_Job(it, f)) for it, f in zip(row.items, frames)))
        path, sha, score, label, error, reason, prov, info = video_record(row, [o.result for o, _ in outs],
                                                                          det.threshold, cfg.provenance)
        if error is not None:
            raise image_error(error)
        res = {"filename": name, "sha256": sha, "score": score, "label": label, "reason": reason,
               "threshold": det.threshold, "model": det.id, "model_version": str(det.version), "error": None,
               "batch_size": max(i.size for _, i in outs), "provenance": prov, "video": info}
        render_s = None
        if maps:
            for entry, (o, _) in zip(info["frames"], outs):
                entry.update(frame_entry(o.map, o.map_error))
            summary = summarize(info["frames"])
            res.update(localizer=self.localizer_id(), **summary)
            if "map_max" in summary:
                t = time.perf_counter()
                k = max((i for i, f in enumerate(info["frames"]) if "map_max" in f), key=lambda i: info["frames"][i]["map_max"])
                res["map_score"] = summary["map_max"]
                res["mask_png"], res["overlay_png"] = await asyncio.to_thread(self._render, frames[k], outs[k][0].map)
                render_s = time.perf_counter() - t
        res["timing_ms"] = _ms(decode=decode_s, queue=max(i.queued_s for _, i in outs), model=sum(i.run_s for _, i in outs),
                               render=render_s, total=time.perf_counter() - started)
        return res

    def not_ready(self) -> ServiceError:
        # Open routes say what is wrong, never where: the paths and the exception are in the log.
        return ServiceError(503, "not_ready", "the model is still loading" if self.load_error is None
                            else "the model failed to load (details in the server log)")

    def localizer_id(self) -> str:
        name = self.config.localizer
        return "fakescope-default-localizer" if name == "default" else Path(str(name)).name

    def describe_models(self, models: Models) -> dict:
        d = models.detector
        rule = getattr(d, "uncertainty", None) if getattr(d, "abstain", False) else None
        band = None if rule is None else list(rule.cuts(d.threshold))
        info = {"detector": {"id": d.id, "version": str(d.version), "threshold": float(d.threshold),
                             "backbone": d.spec.name, "method": getattr(getattr(d, "head", None), "method", "?"),
                             "uncertain_band": band},
                "localizer": None}
        if models.localizer is not None:
            loc = models.localizer
            info["localizer"] = {"id": self.localizer_id(), "backbone": loc.spec.name, "threshold": float(loc.threshold)}
        return info


def _ms(**seconds: float | None) -> dict:
    return {k: (None if v is None else round(v * 1000.0, 2)) for k, v in seconds.items()}


# ---------------------------------------------------------------- the app
def create_app(config: ServiceConfig | None = None, loader: Callable[[ServiceConfig], Models] = load_models) -> FastAPI:
    """The service as an ASGI app. `loader` builds the models (tests pass stubs); it runs in a
    thread after startup, so /healthz answers at once and /readyz says when the models are in."""
    cfg = config or ServiceConfig()
    svc = Service(cfg, loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.batcher.start()
        loading = asyncio.create_task(svc.load())
        yield
        loading.cancel()
        await svc.batcher.stop()

    app = FastAPI(title="fakescope", version=__version__, lifespan=lifespan, debug=False,
                  docs_url=None, redoc_url=None,  # FastAPI's pages pull scripts from a CDN; /docs is ours below
                  description="Scores P(fake) for images and maps where they were edited. Errors are "
                              '`{"error": {"code", "detail"}}`.')
    app.state.service = svc
    _install_error_handlers(app)

    @app.middleware("http")
    async def no_store(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if not request.url.path.startswith("/static/"):  # answers are per request: never cached on the way
            response.headers["Cache-Control"] = "no-store"
        return response

    if cfg.allowed_hosts:  # added last, so it runs first: a wrong Host is refused before anything else
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(cfg.allowed_hosts))
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed when the server has an API key")

    def check_key(key: str | None = Depends(key_header)) -> None:
        if not key or not hmac.compare_digest(key.encode(), cfg.api_key.encode()):
            raise ServiceError(401, "unauthorized", f"missing or wrong API key (header {API_KEY_HEADER})")

    guarded = [Depends(check_key)] if cfg.api_key else []
    errors = {s: {"model": schemas.ErrorBody} for s in (400, 401, 413, 415, 422, 503, 504)}

    async def serve(work: Callable[[], Any]) -> Any:
        """Ready and capacity checks, then `work` under the request timeout."""
        if svc.models is None:
            raise svc.not_ready()
        if svc.inflight >= cfg.max_inflight:
            raise ServiceError(503, "busy", f"{cfg.max_inflight} requests in progress; retry shortly")
        svc.inflight += 1
        try:
            return await asyncio.wait_for(work(), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, "timeout", f"not answered within {cfg.request_timeout_s:g} s") from None
        finally:
            svc.inflight -= 1

    localize_q = Query(True, description="also map where the image was edited (when a localiser is loaded)")

    @app.post("/v1/detect", response_model=schemas.Detection, responses=errors, dependencies=guarded,
              openapi_extra=schemas.DETECT_BODY, summary="Score one image")
    async def detect(request: Request, localize: bool = localize_q):
        started = time.perf_counter()

        async def work():
            # room for base64 or multipart framing; a video may be larger than an image
            limit = max(cfg.max_upload_bytes, cfg.max_video_bytes) * 4 // 3 + 64 * 1024  # (video: only if larger)
            ((name, data),) = await read_uploads(request, limit, many=False, max_files=1)
            return await svc.detect(name, data, localize, started)
        return await serve(work)

    @app.post("/v1/detect/batch", response_model=schemas.BatchDetection, responses=errors, dependencies=guarded,
              openapi_extra=schemas.BATCH_BODY, summary="Score several images")
    async def detect_batch(request: Request, localize: bool = localize_q):
        started = time.perf_counter()

        async def one(name, data):
            try:
                return await svc.detect(name, data, localize, started)
            except KeepFailed as e:  # scored, not stored: the score stands, the error says what failed
                return {**e.result, "error": {"code": e.code, "detail": e.detail}}
            except ServiceError as e:  # a refused file is reported in its place; the others go on
                d = svc.models.detector
                return {"filename": name, "score": None, "label": None, "threshold": d.threshold, "model": d.id,
                        "model_version": str(d.version), "error": {"code": e.code, "detail": e.detail},
                        "timing_ms": _ms(total=time.perf_counter() - started)}

        async def work():
            files = await read_uploads(request, cfg.max_batch_bytes, many=True, max_files=cfg.max_batch_files)
            results = await asyncio.gather(*(one(n, b) for n, b in files))
            return {"results": results, "timing_ms": _ms(total=time.perf_counter() - started)}
        return await serve(work)

    @app.get("/v1/models", response_model=schemas.ModelsInfo, responses=errors, dependencies=guarded,
             summary="What is loaded, the limits, the batching counters")
    async def models_info():
        if svc.models is None:
            raise svc.not_ready()
        limits = {k: getattr(cfg, k) for k in schemas.Limits.model_fields}
        return {**svc.describe_models(svc.models), "limits": limits,
                "batching": {"window_ms": cfg.batch_window_ms, "max_size": cfg.max_batch_size, **svc.batcher.stats},
                "keeps_uploads": bool(cfg.keep_uploads_dir)}

    @app.get("/healthz", response_model=schemas.Health, summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.ErrorBody}},
             summary="The models are loaded (503 until then)")
    async def readyz():
        if svc.models is None:
            e = svc.not_ready()
            return error_response(e.status, e.code, e.detail, {"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                            "X-Content-Type-Options": "nosniff"})

    _install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


DOCS_ASSETS = "/static/swagger"


def _install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI 5 (it reads the OpenAPI 3.1 that FastAPI writes; 4.x refuses it) from the
    fastapi-offline wheel's static files (the server extra; only its files are used), served by this
    app, so the page works offline and loads nothing from other hosts. Without the wheel, no /docs."""
    import importlib.util

    found = importlib.util.find_spec("fastapi_offline")
    if found is None or not found.submodule_search_locations:
        return
    assets = Path(list(found.submodule_search_locations)[0]) / "static"
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="fakescope API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    # mounted before /static, which would otherwise take the /static/swagger paths
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="swagger")


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure answers in the one error shape; unexpected ones are logged here, not sent."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, e: ServiceError):
        if isinstance(e, KeepFailed):
            return JSONResponse({"error": {"code": e.code, "detail": e.detail}, "result": e.result}, status_code=e.status)
        return error_response(e.status, e.code, e.detail, {"Retry-After": "1"} if e.status == 503 else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(e.status_code, codes.get(e.status_code, f"http_{e.status_code}"), str(e.detail),
                              getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        msgs = ["{}: {}".format(".".join(str(p) for p in err.get("loc", ())), err.get("msg", "")) for err in e.errors()]
        return error_response(422, "bad_request", "; ".join(msgs) or "invalid request")

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "unexpected server error (logged on the server)")


def server_options(cfg: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> dict:
    """uvicorn's options for `fakescope serve` (uvicorn.run / uvicorn.Config keywords): bounded
    connections, idle keep-alive closed after `keep_alive_s`, and a connection that has not sent a
    request's headers within `header_timeout_s` (idle or slow-header, e.g. slowloris) closed, so
    sockets cannot pile up until the process runs out of file descriptors."""
    return dict(host=host, port=port, log_level=log_level, server_header=False, timeout_graceful_shutdown=5,
                limit_concurrency=cfg.max_connections, timeout_keep_alive=max(1, round(cfg.keep_alive_s)),
                http=_protocol_with_header_timeout(cfg.header_timeout_s))


def _protocol_with_header_timeout(seconds: float):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        """uvicorn's h11 protocol, plus a deadline for the headers of each request."""

        _deadline = None
        _armed_cycle = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_cycle = self.cycle
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_cycle and not self.transport.is_closing():  # no request began since
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._armed_cycle:  # a request's headers are in: its own timeout applies now
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11


__all__ = ["ServiceConfig", "Models", "Service", "ServiceError", "create_app", "load_models", "server_options",
           "API_KEY_HEADER"]
