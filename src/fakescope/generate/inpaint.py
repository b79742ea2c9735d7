"""Dolos-style local inpainting sets: (real, fake, mask) triplets in the CocoGlide layout.

    report = build_inpaint(["photos/"], ["sd2-inpaint"], "out/", masks="auto", per_image=2)
    pairs = fakescope.data.pairs.load_pairs("out/")       # reads the result directly

For every real image, `per_image` masks (generated shapes, or one mask per image from a folder)
and every inpainting generator: the image is resized to the working size (longer side `size`,
default the pipeline's native size, both sides multiples of 8, aspect kept), the pipeline repaints the masked region from a prompt,
and the unmasked region is pasted back from the real (by default, see below).

Output (OUT):

    real/<name>.<ext>                 the real image at the working size, encoded like the fakes
    fake/<generator>/<name>_<k>.<ext> the inpainted image
    mask/<name>_<k>.png               its mask, 0/255 (the same mask for every generator)
    table.csv                         real,fake,mask,prompt + generator,seed,steps,guidance,strength,
                                      paste_back,mask_kind,mask_source,area,width,height,format,model,pipeline,source
    errors.jsonl                      items that failed (unreadable image, missing mask, ...)

Masks: `masks="auto"` draws shapes with the generators of `data/manipulate/masks.py` (box, ellipse,
free-form strokes, and optionally blob), covering a fraction of the image in `area`, from a
seed per (image, k): the same masks for every generator and every rerun. `masks=DIR` takes the
mask of image `<stem>` from `DIR/<stem>.*` or `DIR/<stem>_mask.*` (non-zero = inpaint), resized
with nearest-neighbour to the working size; an image without one is reported, not fatal.

Paste-back (default on): a latent-diffusion inpainting pipeline decodes the WHOLE image through
its VAE, so without paste-back every pixel changes slightly (the VAE's reconstruction error and
its decoder fingerprint) while the mask says only the region was edited. With paste-back the
fake equals the real outside the mask, bit for bit before encoding, so the mask is exactly the
set of edited pixels: the ground truth a localiser is trained and scored on. The Dolos study
(Tantaru et al., 2024) compares both: without paste-back a detector can find "edited" images
from the global VAE trace alone, which real local edits in the wild need not carry. Use
`paste_back=False` (`--no-paste-back`) to build that variant; the table records which one a
row is. The paste is hard (no feathering): the boundary of the region is itself a trace, as in
most published inpainting sets.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..data.pair_table import PairTable
from ..files import JsonlAppender, atomic_write
from ..progress import progress
from .engine import iter_results, optional, result_columns, run_local, run_ray
from .fakes import ERRORS, item_seed, read_captions
from .output import FORMATS, encode_image, normalise_format, warn_format_shortcuts
from .pipelines import PipelineWorker, torch_generators
from .spec import GeneratorSpec, parse_generator

TABLE = "table.csv"
TABLE_COLUMNS = ("real", "fake", "mask", "prompt", "generator", "seed", "steps", "guidance", "strength",
                 "paste_back", "mask_kind", "mask_source", "area", "width", "height", "format", "model",
                 "pipeline", "source")
DEFAULT_MASK_KINDS = ("box", "ellipse", "strokes")
DEFAULT_AREA = (0.05, 0.35)
DEFAULT_SIZE = 512
MASK_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


# ================================================================ inputs
def collect_real_images(sources: Sequence[str]) -> list:
    """Real images from folders, files, tars or manifests (data/sources.py `read_reals`): fakes are
    never inpainted, their untouched pixels are not real. Returns Sample records."""
    from ..data.sources import read_reals
    return read_reals(sources)


def index_masks(mask_dir: str | os.PathLike) -> dict[str, str]:
    """stem -> mask path for the images of a mask folder (`x.png` and `x_mask.png` both give `x`;
    an exact stem wins over a `_mask` one)."""
    d = Path(mask_dir)
    if not d.is_dir():
        raise ValueError(f"mask folder {d} does not exist")
    exact, suffixed = {}, {}
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix.lower() in MASK_SUFFIXES:
            exact.setdefault(f.stem, str(f))
            if f.stem.endswith("_mask"):
                suffixed.setdefault(f.stem[:-5], str(f))
    return {**suffixed, **exact}


def working_size(width: int, height: int, side: int, multiple: int = 8) -> tuple[int, int]:
    """(W, H) with the longer side about `side`, aspect kept, both multiples of `multiple`."""
    f = side / max(width, height)
    w = max(multiple, int(round(width * f / multiple)) * multiple)
    h = max(multiple, int(round(height * f / multiple)) * multiple)
    return w, h


def encode_mask(mask: np.ndarray) -> bytes:
    """A {0,1} mask -> 8-bit greyscale PNG with values 0 and 255 (the CocoGlide convention)."""
    buf = io.BytesIO()
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * np.uint8(255), "L").save(buf, format="PNG")
    return buf.getvalue()


def _read_mask_file(path: str, size: tuple[int, int]) -> np.ndarray:
    from ..images import decode_image

    m = decode_image(path).convert("L")
    if m.size != size:
        m = m.resize(size, Image.NEAREST)
    return (np.asarray(m) > 127).astype(np.uint8)


# ================================================================ the worker
class InpaintBatch(PipelineWorker):
    """Inpainting for one batch of planned items (the picklable per-batch callable of both
    engines; one pipeline per process, loaded on first call).

    options: out_dir, format, quality, size (longer side), paste_back, mask_kinds, area, safety_checker.
    batch: columns key, source, data, real, fake, mask, mask_path, prompt, seed, mask_seed.
    returns: columns key, error, record (the table row, JSON)."""

    task = "inpaint"

    def _side(self) -> int:
        """Longer side of the working size: the size asked for, else the pipeline's native size."""
        if self.options.get("size"):
            return int(self.options["size"])
        from .pipelines import native_size

        return int(native_size(self.pipe)[0] or DEFAULT_SIZE)

    def _prepare(self, batch: dict, i: int):
        from ..data.manipulate.common import pick
        from ..data.manipulate.masks import mask_shape
        from ..images import decode_image

        data = optional(batch, "data", i)
        source = str(batch["source"][i])
        cwd = self.options.get("cwd") or "."
        img = decode_image(data if data is not None else os.path.join(cwd, source), name=source)
        size = working_size(img.width, img.height, self._side())
        if img.size != size:
            img = img.resize(size, Image.LANCZOS)
        real = np.asarray(img, dtype=np.uint8)
        mask_path = optional(batch, "mask_path", i)
        if mask_path:
            mask = _read_mask_file(os.path.join(cwd, str(mask_path)), size)
            kind, src = "file", str(mask_path)
        else:
            rng = np.random.default_rng(int(batch["mask_seed"][i]))
            kinds = self.options.get("mask_kinds") or DEFAULT_MASK_KINDS
            kind = pick(rng, list(kinds))
            mask = mask_shape(kind, size[1], size[0], rng, tuple(self.options.get("area") or DEFAULT_AREA))
            src = "auto"
        if not mask.any():
            raise ValueError("empty_mask: the mask selects no pixel")
        return real, mask, kind, src

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        n = len(keys)
        errors: list[str] = [""] * n
        records: list[dict | None] = [None] * n
        prepared: dict[int, tuple] = {}
        try:
            pipe = self.pipe  # first: the working size may be the pipeline's native one
            info = self.generator_info()
        except Exception as e:  # noqa: BLE001
            return result_columns(keys, [f"generation_failed: {type(e).__name__}: {e}"] * n, records)
        for i in range(n):
            try:
                prepared[i] = self._prepare(batch, i)
            except Exception as e:  # noqa: BLE001 - unreadable image or mask: that item only
                reason = getattr(e, "reason", None)
                errors[i] = reason or (str(e) if str(e).startswith("empty_mask") else f"{type(e).__name__}: {e}")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (real, *_rest) in prepared.items():
            groups.setdefault((real.shape[1], real.shape[0]), []).append(i)
        out_dir = Path(self.options["out_dir"])
        fmt = normalise_format(self.options.get("format", "png"))
        quality = int(self.options.get("quality", 95))
        paste_back = bool(self.options.get("paste_back", True))
        strength = self.spec.strength if self.spec.strength is not None else self._defaults.get("strength")
        for (w, h), idx in groups.items():
            kwargs = {"prompt": [str(optional(batch, "prompt", i) or "") for i in idx],
                      "image": [Image.fromarray(prepared[i][0]) for i in idx],
                      "mask_image": [Image.fromarray(prepared[i][1] * np.uint8(255), "L") for i in idx],
                      "height": h, "width": w, "num_inference_steps": int(self.spec.steps),
                      "generator": torch_generators([batch["seed"][i] for i in idx])}
            if self.spec.guidance is not None:
                kwargs["guidance_scale"] = float(self.spec.guidance)
            if self.spec.strength is not None:
                kwargs["strength"] = float(self.spec.strength)
            if self.spec.negative:
                kwargs["negative_prompt"] = [self.spec.negative] * len(idx)
            try:
                result = pipe(**kwargs)
            except Exception as e:  # noqa: BLE001
                for i in idx:
                    errors[i] = f"generation_failed: {type(e).__name__}: {e}"
                continue
            flags = getattr(result, "nsfw_content_detected", None) or [False] * len(idx)
            for j, i in enumerate(idx):
                if flags[j]:
                    errors[i] = "nsfw_filtered: the pipeline's safety checker blanked this image (not written)"
                    continue
                real, mask, kind, src = prepared[i]
                gen = result.images[j].convert("RGB")
                if gen.size != (w, h):
                    gen = gen.resize((w, h), Image.LANCZOS)
                gen = np.asarray(gen, dtype=np.uint8)
                fake = np.where(mask[..., None] > 0, gen, real) if paste_back else gen
                try:
                    real_path = out_dir / str(batch["real"][i])
                    if not real_path.is_file():  # the same bytes for every k and generator
                        atomic_write(real_path, encode_image(real, fmt, quality))
                    atomic_write(out_dir / str(batch["mask"][i]), encode_mask(mask))
                    atomic_write(out_dir / str(batch["fake"][i]), encode_image(fake, fmt, quality))
                except OSError as e:
                    errors[i] = f"write_failed: {e}"
                    continue
                records[i] = {
                    "real": str(batch["real"][i]), "fake": str(batch["fake"][i]), "mask": str(batch["mask"][i]),
                    "prompt": str(optional(batch, "prompt", i) or ""), "generator": self.spec.name,
                    "seed": int(batch["seed"][i]), "steps": info["steps"], "guidance": info["guidance"],
                    "strength": None if strength is None else float(strength), "paste_back": int(paste_back),
                    "mask_kind": kind, "mask_source": src, "area": round(float(mask.mean()), 4),
                    "width": w, "height": h, "format": fmt, "model": info["model"], "pipeline": info["pipeline"],
                    "source": str(batch["source"][i]),
                }
        return result_columns(keys, errors, records)


# ================================================================ the build
@dataclass
class InpaintReport:
    out_dir: Path
    images: int = 0
    planned: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def __str__(self) -> str:
        s = (f"{self.written} inpainted images written, {self.skipped} already done, {self.failed} failed "
             f"(of {self.planned} planned from {self.images} real images)")
        for gen, (n, sec) in self.seconds.items():
            if n:
                s += f"\n  {gen}: {n} images in {sec:.1f} s ({n / sec:.3g} images/s)"
        return s


def _prompts(samples: Sequence, captions: str | os.PathLike | None) -> dict[str, list[str]]:
    if not captions:
        return {}
    table: dict[str, list[str]] = {}
    for p in read_captions(captions):
        table[p.id] = p.captions
        if p.path:
            table.setdefault(Path(p.path).stem, p.captions)
    return table


def build_inpaint(images: Sequence | str, generators: Sequence[GeneratorSpec | str], out_dir: str | os.PathLike, *,
                  masks: str | os.PathLike = "auto", per_image: int = 1,
                  mask_kinds: Sequence[str] = DEFAULT_MASK_KINDS, area: tuple[float, float] = DEFAULT_AREA,
                  prompt: str = "", captions: str | os.PathLike | None = None, size: int | None = None,
                  steps: int | None = None, guidance: float | None = None, fmt: str = "png", quality: int = 95,
                  paste_back: bool = True, seed: int = 0, batch_size: int = 4, limit: int | None = None,
                  max_new: int | None = None, device: str | None = None, dtype: str | None = None,
                  safety_checker: bool = True, engine: str = "local", ray_actors: int | None = None,
                  ray_gpus_per_actor: float | None = None, ray_address: str | None = None,
                  loader: Callable | None = None, log: Callable[[str], None] | None = None) -> InpaintReport:
    """Inpaint real images into (real, fake, mask) triplets (see the module doc).

    `images`: Sample records, paths, or source strings (folders, files, tars, manifests).
    `size`: longer side of the working size (default: the generator's `size=`, else the
    pipeline's native size: 512 for SD 1.x/2.x, 1024 for SDXL).
    `prompt`: the text for every image; `captions`: a captions manifest (as for build fakes)
    whose captions, matched by id or image stem, replace it (caption k mod n for edit k).
    Resumable like `build_fakes`: a fake whose table row and three files exist is skipped."""
    from ..data.manipulate import MASK_KINDS
    from ..data.manipulate.dataset import output_names
    from ..data.samples import FAKE, Sample

    log = log or (lambda msg: print(msg, file=sys.stderr))
    fmt = normalise_format(fmt)
    if per_image < 1:
        raise ValueError("per_image must be >= 1")
    bad = set(mask_kinds) - set(MASK_KINDS)
    if bad or not mask_kinds:
        raise ValueError(f"mask kinds must be among {', '.join(MASK_KINDS)}, got {list(mask_kinds)}")
    if engine not in ("local", "ray"):
        raise ValueError("engine must be local or ray")
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    samples = []
    for s in images:
        if isinstance(s, Sample):
            samples.append(s)
        else:
            samples += collect_real_images([os.fspath(s)])
    ignored = sum(1 for s in samples if s.label == FAKE)
    samples = [s for s in samples if s.label != FAKE]
    samples = samples[:limit] if limit else samples
    specs = [parse_generator(g).with_defaults(device=device, dtype=dtype, steps=steps, guidance=guidance)
             for g in generators]
    if not specs:
        raise ValueError("no generator given")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("generator names must be unique")
    mask_index = None if str(masks) == "auto" else index_masks(masks)
    out = Path(out_dir)
    for sub in ("real", "fake", "mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    report = InpaintReport(out, images=len(samples))
    if ignored:
        report.notes.append(f"{ignored} images labelled fake were ignored (only real images are inpainted)")
    prompts = _prompts(samples, captions)

    ext = FORMATS[fmt]
    names = output_names(samples)
    items: list[dict] = []
    missing: list[tuple[str, str]] = []
    for spec in specs:
        for sample, name in zip(samples, names):
            stem = Path(sample.path.split("::")[-1]).stem
            mask_path = None
            if mask_index is not None:
                mask_path = mask_index.get(stem)
            caps = prompts.get(stem) or prompts.get(name)
            for k in range(per_image):
                key = f"fake/{spec.name}/{name}_{k}{ext}"
                if mask_index is not None and mask_path is None:
                    missing.append((key, f"missing_mask: no mask for {stem} in {masks}"))
                    continue
                items.append({
                    "key": key, "generator": spec.name, "source": sample.path, "data": sample.data,
                    "real": f"real/{name}{ext}", "fake": key, "mask": f"mask/{name}_{k}.png",
                    "mask_path": mask_path, "prompt": caps[k % len(caps)] if caps else prompt,
                    "seed": item_seed(seed, name, k, spec.name), "mask_seed": item_seed(seed, name, k, "mask"),
                })
    report.planned = len(items) + len(missing)

    table = PairTable(out / TABLE, TABLE_COLUMNS)
    table.drop_missing(out)  # a file vanished: redo
    rows = table.rows
    pending = []
    for it in items:
        row = rows.get(it["key"])
        if row is not None:
            if row["seed"] != str(it["seed"]) or row["format"] != fmt or row["paste_back"] != str(int(paste_back)):
                raise ValueError(f"{it['key']} was already built with other settings (seed, format or paste-back); "
                                 "give the generator another name, or build into another --out")
            report.skipped += 1
        else:
            pending.append(it)
    if max_new is not None:
        pending = pending[:max(0, max_new)]
    if report.skipped:
        log(f"resuming: {report.skipped} of {len(items)} inpainted images already in {out}")
    (out / "build.json").write_text(json.dumps({
        "command": "build inpaint", "generators": [s.to_dict() for s in specs],
        "options": {"masks": str(masks), "per_image": per_image, "mask_kinds": list(mask_kinds), "area": list(area),
                    "prompt": prompt, "captions": str(captions) if captions else None, "size": size,
                    "format": fmt, "quality": quality, "paste_back": paste_back, "seed": seed,
                    "safety_checker": safety_checker, "engine": engine},
        "images": len(samples)}, indent=2) + "\n")

    errors_out = JsonlAppender(out / ERRORS)

    def fail(key: str, message: str) -> None:
        report.failed += 1
        report.errors.append((key, message))
        errors_out.write({"key": key, "error": message, "time": time.time()})
        log(f"failed {key}: {message}")

    bar = progress(total=len(pending), desc="build inpaint", min_total=1)
    try:
        for key, message in missing:
            fail(key, message)
        base_options = {"out_dir": str(out.resolve()), "cwd": os.getcwd(), "format": fmt, "quality": quality, "paste_back": paste_back,
                        "mask_kinds": list(mask_kinds), "area": list(area), "safety_checker": safety_checker}
        for spec in specs:
            todo = [it for it in pending if it["generator"] == spec.name]
            if not todo:
                continue
            options = dict(base_options, size=size or spec.width)  # None: the pipeline's native size
            t0, before = time.perf_counter(), report.written

            def on_batch(batch: dict) -> None:
                for key, error, rec in iter_results(batch):
                    bar.update(1)
                    if error:
                        fail(key, error)
                    elif rec is not None:
                        table.add(rec)
                        report.written += 1

            if engine == "ray":
                run_ray(InpaintBatch, (spec.to_dict(), options), todo, batch_size, on_batch,
                        actors=ray_actors, gpus_per_actor=ray_gpus_per_actor, address=ray_address)
            else:
                if loader is not None:
                    options["loader"] = loader
                run_local(InpaintBatch(spec, options), todo, batch_size, on_batch)
            report.seconds[spec.name] = (report.written - before, time.perf_counter() - t0)
    finally:
        errors_out.close()
        bar.close()
        # canonical table: plan order, then rows of earlier runs this plan does not cover
        done_rows = table.rewrite([it["key"] for it in items])

    # the format guard: reals and fakes are encoded alike here, so a finding means a bug or a mix
    from ..data.samples import FAKE as _F, REAL as _R, Sample as _S
    from ..evaluation.format_guard import check_formats

    found = check_formats([_S(path=str(out / r["fake"]), label=_F) for r in done_rows]
                          + [_S(path=str(out / r["real"]), label=_R) for r in {r["real"]: r for r in done_rows}.values()])
    warn_format_shortcuts(found, report.warnings, log)
    return report


__all__ = ["build_inpaint", "InpaintBatch", "InpaintReport", "collect_real_images", "index_masks", "working_size",
           "TABLE_COLUMNS", "DEFAULT_MASK_KINDS", "DEFAULT_AREA"]
