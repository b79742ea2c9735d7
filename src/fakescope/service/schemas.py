"""The JSON shapes of the service, as pydantic models: they document the responses in the
OpenAPI schema (/openapi.json). Request bodies are read by hand (bounded, see app.py), so
their schema is written out here as plain dicts for the routes' `openapi_extra`."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, machine-readable: too_large, not_an_image, truncated, timeout, ...")
    detail: str = Field(description="For people.")


class ErrorBody(BaseModel):
    error: ErrorInfo


class Timing(BaseModel):
    decode: Optional[float] = Field(None, description="ms decoding and preprocessing this image")
    queue: Optional[float] = Field(None, description="ms waiting for its batch to start")
    model: Optional[float] = Field(None, description="ms the model spent on its micro-batch (shared by the batch)")
    render: Optional[float] = Field(None, description="ms encoding the mask and overlay PNGs")
    total: float = Field(description="ms from the request's arrival to its answer")


class Detection(BaseModel):
    filename: Optional[str] = None
    sha256: Optional[str] = None
    score: Optional[float] = Field(None, description="P(fake): probability the image is AI-generated, 0..1")
    label: Optional[str] = Field(None, description='"fake" if score >= threshold, "uncertain" where the model '
                                 'cannot know (see reason), else "real"')
    reason: Optional[str] = Field(None, description='why the verdict is "uncertain", or "fake" from provenance or from the edit map')
    threshold: float
    model: str = Field(description="detector id")
    model_version: str
    error: Optional[ErrorInfo] = Field(None, description="set (and score null) when this file was refused")
    batch_size: Optional[int] = Field(None, description="images in the micro-batch this one shared")
    localizer: Optional[str] = Field(None, description="localiser id when maps were computed")
    map_score: Optional[float] = Field(None, description="image-level score from the map: edit_score when the "
                                       "localiser has an image rule, else the map's 3x3-averaged max")
    edit_score: Optional[float] = Field(None, description="the localiser's image rule: mean of the map's top share of pixels")
    edit_threshold: Optional[float] = Field(None, description="edit_score >= this: an edited region; the verdict is then "
                                            '"fake" (reason "edit map: ...") even when P(fake) is low')
    edited: Optional[bool] = Field(None, description="edit_score >= edit_threshold")
    map_mean: Optional[float] = None
    map_max: Optional[float] = None
    map_error: Optional[str] = None
    mask_png: Optional[str] = Field(None, description="base64 8-bit grey PNG, 0-255 = P(pixel edited)")
    overlay_png: Optional[str] = Field(None, description="base64 RGB PNG: the heatmap fully blended over the image")
    map_frame: Optional[float] = Field(None, description="a video with maps: time (s) of the frame with the highest "
                                       "map_max, whose mask and overlay these are; map_mean is the mean over frames, "
                                       "and each video.frames entry has its own map_mean / map_max or map_error")
    provenance: Optional[dict] = Field(None, description="what the file says about its origin (C2PA, IPTC/XMP, "
                                       "EXIF, PNG generation chunks): status, summary, ai_claims, c2pa, evidence, notes")
    experts: Optional[dict] = Field(None, description="a fused detector: each expert's P(fake) (null where the "
                                    "image is outside its domain); score is their stacked combination")
    video: Optional[dict] = Field(None, description="a video upload: sampled frames' times and scores; score is "
                                  "the mean of the top ceil(n/4) frame scores (also mean, max); provenance is read "
                                  "from the container (C2PA, XMP, encoder / handler tags)")
    timing_ms: Timing


class BatchDetection(BaseModel):
    results: list[Detection] = Field(description="one per file, in upload order; refused files carry `error`")
    timing_ms: Timing


class DetectorInfo(BaseModel):
    id: str
    version: str
    threshold: float
    backbone: str
    method: str
    uncertain_band: Optional[list[float]] = Field(
        None, description="[confident-real cut, confident-fake cut]: a score between them is answered \"uncertain\" "
                          "(reason \"near threshold\"); null when the detector has no such rule or answers always")


class LocalizerInfo(BaseModel):
    id: str
    backbone: str
    threshold: float


class Limits(BaseModel):
    max_upload_bytes: int
    max_batch_bytes: int
    max_pixels: int
    max_batch_files: int
    request_timeout_s: float
    max_video_bytes: Optional[int] = None
    max_video_seconds: Optional[float] = None


class Batching(BaseModel):
    window_ms: float
    max_size: int
    batches: int
    images: int
    mean_batch_size: Optional[float] = None
    sizes: dict[str, int]


class ModelsInfo(BaseModel):
    detector: DetectorInfo
    localizer: Optional[LocalizerInfo] = None
    limits: Limits
    batching: Batching
    keeps_uploads: bool = Field(description="the server saves accepted uploads (serve --keep-uploads)")


class Health(BaseModel):
    status: str


# ---------------------------------------------------------------- request bodies (OpenAPI only)
_IMAGE_B64 = {"type": "string", "description": "the file's bytes in base64 (a data: URL prefix is accepted)"}
_FILENAME = {"type": "string", "description": "optional, echoed back; never trusted for the format"}
_ONE_JSON = {"type": "object", "required": ["image"], "properties": {"image": _IMAGE_B64, "filename": _FILENAME}}


def _body(multipart: dict, json_schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": multipart},
        "application/json": {"schema": json_schema},
    }}}


DETECT_BODY = _body(
    {"type": "object", "required": ["file"],
     "properties": {"file": {"type": "string", "format": "binary", "description": "one image file"}}},
    _ONE_JSON,
)
BATCH_BODY = _body(
    {"type": "object", "required": ["file"],
     "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "several image files, each in a part named `file`"}}},
    {"type": "object", "required": ["images"], "properties": {"images": {"type": "array", "items": _ONE_JSON}}},
)
