"""Warn when real and fake images differ in file format, size or JPEG quality.

A detector trained on PNG fakes and JPEG reals (the usual case when fakes come straight from a
generator and reals from the web) can learn "JPEG or not" instead of "generated or not", and an
evaluation set with that split rewards it. `format_report` summarises each class from the file
headers only (Pillow's `Image.open`, which reads the header and the JPEG tables but decodes no
pixels); `check_formats` turns class differences into warnings.

JPEG quality estimate: libjpeg (IJG) builds the luminance quantisation table for quality q as
    scale = 5000 / q  (q < 50)   or   200 - 2 q  (q >= 50)
    table[i] = clamp((std[i] * scale + 50) // 100, 1, 255)
from the standard Annex K table `std`. The estimate is the q in 1..100 whose IJG table is
closest (mean absolute difference) to the file's table 0; for a file written by libjpeg
(Pillow, most cameras' software, browsers) it is exact. Encoders with their own tables
(Photoshop, some phones) get the nearest IJG quality, which is only a rough figure.
"""
from __future__ import annotations

import io
import statistics
import warnings
from collections import Counter
from typing import Sequence

import numpy as np
from PIL import Image

from ..data.samples import FAKE, REAL, Sample

# ITU-T T.81 Annex K, table K.1, natural (row-major) order.
STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
_ZIGZAG = sorted(range(64), key=lambda k: (k // 8 + k % 8, (k % 8) if (k // 8 + k % 8) % 2 == 0 else k // 8))
_STD_ZIGZAG = STD_LUMINANCE[_ZIGZAG]


def ijg_table(quality: int, std: np.ndarray = STD_LUMINANCE) -> np.ndarray:
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((std * scale + 50) // 100, 1, 255)


_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])
_TABLES_ZZ = np.stack([ijg_table(q, _STD_ZIGZAG) for q in range(1, 101)])


def estimate_jpeg_quality(table) -> float:
    """The IJG quality (1..100) whose luminance table best matches `table` (64 values). Pillow
    reports tables in natural order; zig-zag order (older Pillow) is matched as well."""
    t = np.asarray(list(table), dtype=np.int64)
    if t.shape != (64,):
        raise ValueError(f"a quantisation table has 64 entries, got {t.shape}")
    err = np.minimum(np.abs(_TABLES - t).mean(1), np.abs(_TABLES_ZZ - t).mean(1))
    return float(np.argmin(err) + 1)


def _header(sample: Sample) -> tuple[str, tuple[int, int], float | None] | None:
    """(format, (width, height), jpeg quality or None) from the header, or None if unreadable."""
    try:
        src = io.BytesIO(sample.data) if sample.data is not None else sample.path
        with Image.open(src) as img:
            fmt, size = img.format or "unknown", img.size
            quality = None
            qt = getattr(img, "quantization", None)
            if fmt in ("JPEG", "MPO") and qt and 0 in qt:
                quality = estimate_jpeg_quality(qt[0])
            return fmt, size, quality
    except Exception:  # noqa: BLE001 - any unreadable file is just counted
        return None


CLASS_NAMES = {REAL: "real", FAKE: "fake"}


def format_report(samples: Sequence[Sample]) -> dict:
    """Per class ("real", "fake"): n, unreadable, formats {format: count}, dominant_format,
    median_width, median_height, jpeg_quality_median (None without JPEGs), n_jpeg."""
    out = {}
    for label, name in CLASS_NAMES.items():
        heads = [_header(s) for s in samples if s.label == label]
        ok = [h for h in heads if h is not None]
        formats = Counter(h[0] for h in ok)
        qualities = [h[2] for h in ok if h[2] is not None]
        out[name] = {
            "n": len(heads),
            "unreadable": len(heads) - len(ok),
            "formats": dict(formats.most_common()),
            "dominant_format": formats.most_common(1)[0][0] if formats else None,
            "median_width": statistics.median(h[1][0] for h in ok) if ok else None,
            "median_height": statistics.median(h[1][1] for h in ok) if ok else None,
            "n_jpeg": len(qualities),
            "jpeg_quality_median": statistics.median(qualities) if qualities else None,
        }
    return out


def check_formats(samples: Sequence[Sample] | None = None, size_ratio: float = 1.5, quality_gap: float = 10.0,
                  report: dict | None = None) -> list[str]:
    """Warnings (plain sentences) where the classes differ enough to be a shortcut: a different
    dominant format, a median width or height more than `size_ratio` times the other class's,
    or median JPEG qualities more than `quality_gap` apart. Empty when a class is missing."""
    r = report if report is not None else format_report(samples or [])
    real, fake = r["real"], r["fake"]
    if not real["dominant_format"] or not fake["dominant_format"]:
        return []
    found = []
    if real["dominant_format"] != fake["dominant_format"]:
        found.append(f"real images are mostly {real['dominant_format']} ({real['formats']}) but fakes are mostly "
                     f"{fake['dominant_format']} ({fake['formats']}): a detector can learn the file format")
    for dim in ("width", "height"):
        a, b = real[f"median_{dim}"], fake[f"median_{dim}"]
        if min(a, b) > 0 and max(a, b) / min(a, b) > size_ratio:
            found.append(f"median {dim} differs: real {a:g} px vs fake {b:g} px (ratio {max(a, b) / min(a, b):.2f} "
                         f"> {size_ratio:g}): a detector can learn the image size")
    qa, qb = real["jpeg_quality_median"], fake["jpeg_quality_median"]
    if qa is not None and qb is not None and abs(qa - qb) > quality_gap:
        found.append(f"median JPEG quality differs: real ~{qa:g} vs fake ~{qb:g} (gap > {quality_gap:g}): "
                     f"a detector can learn the compression level")
    return found


class FormatShortcutWarning(UserWarning):
    """Real and fake images differ in format, size or JPEG quality."""


def warn_if_format_shortcut(samples: Sequence[Sample], **kwargs) -> list[str]:
    """`check_formats`, each finding emitted as a FormatShortcutWarning; returns the findings."""
    found = check_formats(samples, **kwargs)
    for msg in found:
        warnings.warn(msg, FormatShortcutWarning, stacklevel=2)
    return found


__all__ = ["FormatShortcutWarning", "STD_LUMINANCE", "ijg_table", "estimate_jpeg_quality", "format_report",
           "check_formats", "warn_if_format_shortcut"]
