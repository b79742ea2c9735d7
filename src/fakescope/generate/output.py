"""Writing a generated set: image encoding (the atomic files and the JSONL manifest are files.py's).

Every image is encoded in memory and written with `files.atomic_write` (a temporary name in the
same folder, renamed over the final name): a killed run leaves either the old file, the complete
new one, or a stray `.tmp` (ignored), never a torn image. A manifest line is appended (and
flushed) only after its image is in place, so a line in the manifest always points at a complete
file; a line torn by a kill is dropped on resume (`files.read_jsonl`).
"""
from __future__ import annotations

import io
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


__all__ = ["FORMATS", "normalise_format", "encode_image"]


def warn_format_shortcuts(found: Iterable[str], warnings_out: list, log) -> None:
    """Each format-guard finding: kept in the build report, raised as a FormatShortcutWarning, logged."""
    import warnings

    from ..evaluation.format_guard import FormatShortcutWarning

    for msg in found:
        warnings_out.append(msg)
        warnings.warn(msg, FormatShortcutWarning, stacklevel=3)
        log(f"warning: {msg}")
