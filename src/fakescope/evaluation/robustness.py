"""How a detector's scores hold up when the images are post-processed the way the web does it.

Each `Perturbation` is applied to every sample (real and fake alike), the perturbed images are
held in memory as encoded bytes, and the detector is evaluated on them with `evaluate_detector`
(no feature cache: every perturbed image is new). One result row per perturbation.

Perturbations (`DEFAULT_GRID`):
  clean           the image as decoded (re-encoded losslessly as PNG).
  jpeg-Q          re-encoded as JPEG at quality Q (Pillow/libjpeg, default 4:2:0 chroma subsampling);
                  the JPEG bytes themselves are what the detector reads.
  blur-S          Gaussian blur with standard deviation S pixels (Pillow's GaussianBlur radius).
  resize-F        the image resized by the factor F (bicubic), and NOT resized back: the detector
                  brings every image to its own input size anyway, so this measures what a
                  down- or up-scaled copy of the image does to the score.
  crop-0.5        a centred crop keeping 0.5 of the area (each side scaled by sqrt(0.5)).
  noise-S         additive Gaussian noise of standard deviation S in 8-bit units, rounded and
                  clipped to 0..255; seeded, so the same seed gives the same noise.

Every perturbed image other than jpeg is stored as PNG (lossless), so the perturbation is the
only change. An input that cannot be decoded is passed through unchanged, so the detector
reports its error exactly as it would for the clean data.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..data.samples import Sample
from ..imageops import gaussian_blur, gaussian_noise, jpeg_bytes, jpeg_roundtrip, rescale
from ..images import ImageError, decode_image

KINDS = ("clean", "jpeg", "blur", "resize", "crop", "noise")


@dataclass(frozen=True)
class Perturbation:
    name: str
    kind: str            # one of KINDS
    value: float | None  # quality, sigma, scale factor, kept area fraction, noise sigma; None for clean

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation kind {self.kind!r}; expected one of {KINDS}")
        if self.kind != "clean" and self.value is None:
            raise ValueError(f"perturbation {self.name!r} ({self.kind}) needs a value")


def _p(kind: str, value: float | None) -> Perturbation:
    return Perturbation("clean" if value is None else f"{kind}-{value:g}", kind, value)


DEFAULT_GRID: tuple[Perturbation, ...] = (
    _p("clean", None),
    *(_p("jpeg", q) for q in (95, 90, 75, 50)),
    *(_p("blur", s) for s in (1, 2, 3)),
    *(_p("resize", f) for f in (0.5, 0.75, 1.5)),
    _p("crop", 0.5),
    *(_p("noise", s) for s in (5, 10)),
)


def apply(img: Image.Image, p: Perturbation, seed: int = 0) -> Image.Image:
    """The perturbed copy of an image (RGB). Deterministic: noise is drawn from `seed`."""
    img = img.convert("RGB")
    w, h = img.size
    if p.kind == "clean":
        return img.copy()
    if p.kind == "jpeg":
        return jpeg_roundtrip(img, p.value)
    if p.kind == "blur":
        return gaussian_blur(img, p.value)
    if p.kind == "resize":
        return rescale(img, p.value)
    if p.kind == "crop":
        if not 0 < p.value <= 1:
            raise ValueError(f"crop keeps a fraction of the area in (0, 1], got {p.value}")
        side = math.sqrt(p.value)
        cw, ch = max(1, round(w * side)), max(1, round(h * side))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))
    if p.kind == "noise":
        return gaussian_noise(img, p.value, np.random.default_rng(seed))
    raise ValueError(f"unknown perturbation kind {p.kind!r}")  # pragma: no cover (checked in Perturbation)


def encode(img: Image.Image, p: Perturbation, seed: int = 0) -> bytes:
    """The perturbed image as file bytes: the JPEG itself for jpeg, lossless PNG otherwise."""
    if p.kind == "jpeg":
        return jpeg_bytes(img, p.value)
    buf = io.BytesIO()
    apply(img, p, seed).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def perturbed_samples(samples: Sequence[Sample], p: Perturbation, seed: int = 0) -> list[Sample]:
    """In-memory perturbed copies of the samples: same label, generator and text, path `<path>#<name>`.

    Sample i's noise is drawn from the seed sequence (seed, i), so images do not share one noise
    field and a rerun gives identical bytes. Unreadable inputs are returned unchanged."""
    out = []
    for i, s in enumerate(samples):
        try:
            img = decode_image(s.data if s.data is not None else s.path, name=s.path)
        except ImageError:
            out.append(s)
            continue
        data = encode(img, p, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        out.append(replace(s, path=f"{s.path}#{p.name}", data=data))
    return out


ROW_METRICS = ("n", "auc", "ap", "accuracy", "acc_real", "acc_fake")


def robustness_grid(det, samples: Sequence[Sample], grid: Sequence[Perturbation] = DEFAULT_GRID, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> list[dict]:
    """One row per perturbation: {"perturbation", "kind", "value", "n", "auc", "ap", "accuracy",
    "acc_real", "acc_fake", "errors", "auc_by_generator"}; metrics are None when no image could be
    scored. `auc_by_generator` is {generator: AUC of all reals vs that generator's fakes}, present
    when the fakes name two generators or more (which generator breaks first under JPEG or blur)."""
    from .report import evaluate_detector

    samples = list(samples)
    rows = []
    for p in grid:
        m = evaluate_detector(det, perturbed_samples(samples, p, seed=seed))
        row = {"perturbation": p.name, "kind": p.kind, "value": p.value}
        row.update({k: m.get(k) for k in ROW_METRICS})
        row["errors"] = len(m.get("errors", []))
        by_gen = {g: v.get("auc") for g, v in (m.get("per_generator") or {}).items() if isinstance(v, dict)}
        if len(by_gen) > 1:
            row["auc_by_generator"] = by_gen
        rows.append(row)
        if log:
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            log(f"{p.name:>12}: n={row['n']} AUC={fmt(row['auc'])} acc={fmt(row['accuracy'])}")
    return rows


__all__ = ["Perturbation", "DEFAULT_GRID", "KINDS", "apply", "encode", "perturbed_samples", "robustness_grid"]
