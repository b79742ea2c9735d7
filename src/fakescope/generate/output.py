"""Writing a generated set: image encoding, atomic files, an append-only JSONL manifest.

Every image is encoded in memory and written to a temporary name in the same folder, then
renamed over the final name (`os.replace`, atomic on POSIX): a killed run leaves either the old
file, the complete new one, or a stray `.tmp` (ignored, overwritten next time), never a torn
image. A manifest line is appended (and flushed) only after its image is in place, so a line
in the manifest always points at a complete file; a line torn by a kill is dropped on resume.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def normalise_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    f = {"jpg": "jpeg"}.get(f, f)
    if f not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return f


def encode_image(img, fmt: str = "png", quality: int = 95) -> bytes:
    """PIL image or HxWx3 uint8 array -> encoded bytes. JPEG: 4:2:0 chroma subsampling, the
    given quality, no EXIF (Pillow's defaults otherwise, the same for reals and fakes); PNG:
    lossless; WebP: lossy at `quality`."""
    fmt = normalise_format(fmt)
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=int(quality), method=4)
    else:
        img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a unique temporary file in the same folder + os.replace
    (unique per process and call, so concurrent writers of the same file never share a tmp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_jsonl(path: str | os.PathLike, repair: bool = True) -> list[dict]:
    """Records of a JSONL file. A last line cut by a killed run (not valid JSON) is dropped and,
    with `repair`, cut from the file so later appends stay valid JSONL."""
    path = Path(path)
    if not path.is_file():
        return []
    out: list[dict] = []
    keep: list[bytes] = []
    changed = False
    with open(path, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                changed = True
                continue
            if not raw.endswith(b"\n"):
                raw, changed = raw + b"\n", True
            out.append(rec)
            keep.append(raw)
    if changed and repair:
        atomic_write(path, b"".join(keep))
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Replace the whole file atomically."""
    atomic_write(path, b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records))


class JsonlAppender:
    """Append records one per line, flushed after each: a kill loses at most the line being written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["FORMATS", "normalise_format", "encode_image", "atomic_write", "read_jsonl", "write_jsonl",
           "JsonlAppender"]


def warn_format_shortcuts(found: Iterable[str], warnings_out: list, log) -> None:
    """Each format-guard finding: kept in the build report, raised as a FormatShortcutWarning, logged."""
    import warnings

    from ..evaluation.format_guard import FormatShortcutWarning

    for msg in found:
        warnings_out.append(msg)
        warnings.warn(msg, FormatShortcutWarning, stacklevel=3)
        log(f"warning: {msg}")
