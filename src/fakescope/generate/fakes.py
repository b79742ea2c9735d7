"""COCOFake / D3-style fake sets: fakes generated from the captions of real images.

    parents = read_captions("captions.jsonl")            # real images and their captions
    report = build_fakes(parents, ["sd14", "sd21"], "out/", fmt="jpeg", quality=95, write_reals=True)

Input: a captions manifest, JSONL or CSV. A row names a real image (`image`/`path`/`file_name`)
and/or an id (`id`/`image_id`) and carries one caption (`caption`/`text`/`prompt`) or, in JSONL,
a list (`captions`). Rows with the same id (or image) are one parent with several captions: the
COCO layout (one image, five captions) works as one row per caption or one row per image.
Relative image paths are resolved against `images_root` (default: the manifest's folder).
`coco_captions_manifest` writes such a manifest from COCO's `captions_*.json`.

Output (OUT):

    fake/<generator>/<name>_c<k>.<ext>   the fake made from caption k of parent <name>
    real/<name>.<ext>                    with write_reals: the parent re-encoded like the fakes
    manifest.jsonl                       one line per finished image (see below)
    errors.jsonl                         one line per item that failed (unreadable parent, filtered, ...)
    build.json                           the generators and options of the last run

A fake's manifest line links it to its parent ("parents and children"):

    {"key": "sd14/000000391895_c0", "path": "fake/sd14/000000391895_c0.jpg", "label": "fake",
     "generator": "sd14", "parent": "000000391895", "parent_path": "/coco/val2017/000000391895.jpg",
     "caption": "A man riding a bike ...", "caption_index": 0, "seed": 1234567, "steps": 30,
     "guidance": 7.5, "width": 512, "height": 512, "format": "jpeg", "quality": 95,
     "model": "CompVis/stable-diffusion-v1-4", "revision": null, "pipeline": "StableDiffusionPipeline",
     "scheduler": "PNDMScheduler", "dtype": "float16"}

and a real's line has label "real", the parent id, its first caption and all of them. The
manifest is also a training source as it is (`fakescope train --data OUT/manifest.jsonl`: path,
label, generator, caption columns; paths relative to the manifest).

Seeds: item (parent, caption k, generator) gets seed = sha256(base seed, parent, k, generator),
its own CPU torch.Generator, so an image depends on its item only: a rerun in a fresh folder with
the same arguments writes the same bytes (same machine, same library versions; GPU kernels may
differ in the last bits across batch sizes or hardware).

Resume: rerunning with the same OUT skips every item whose manifest line exists and whose file
is there; a line torn by a kill is dropped; items that failed are retried (except `nsfw_filtered`:
the same seed would give the same image). Changing a generator's settings (model, steps, size,
format, base seed) under the same name and OUT is refused: use another name or folder.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..files import JsonlAppender, atomic_write, read_jsonl, write_jsonl
from ..progress import progress
from .engine import iter_results, optional, result_columns, run_local, run_ray
from .output import FORMATS, encode_image, normalise_format, warn_format_shortcuts
from .pipelines import PipelineWorker, check_task, torch_generators
from .spec import GeneratorSpec, parse_generator, safe_name

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
BUILD_INFO = "build.json"
NOT_RETRIED = ("nsfw_filtered",)

_ID_KEYS = ("id", "image_id", "parent")
_IMAGE_KEYS = ("image", "path", "file", "file_name", "filename", "image_path")
_CAPTION_KEYS = ("caption", "text", "prompt")


# ================================================================ captions
@dataclass
class Parent:
    id: str
    path: str | None          # the real image (resolved), or None for captions without an image
    captions: list[str] = field(default_factory=list)


def _first(row: dict, keys: Sequence[str]):
    for k in keys:
        v = row.get(k)
        if v not in (None, ""):
            return v
    return None


def read_captions(source: str | os.PathLike, images_root: str | os.PathLike | None = None) -> list[Parent]:
    """Parents (real images with their captions) from a JSONL or CSV captions manifest, in first-seen
    order. ValueError for a row with neither an id nor an image."""
    src = Path(source)
    text = src.read_text(encoding="utf-8")
    if src.suffix.lower() == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{src}:{i}: not JSON ({e.msg})") from None
    elif src.suffix.lower() == ".json":
        data = json.loads(text)
        rows = data if isinstance(data, list) else data.get("rows") or data.get("items") or []
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    root = Path(images_root) if images_root else src.parent
    parents: dict[str, Parent] = {}
    for i, row in enumerate(rows, 1):
        image = _first(row, _IMAGE_KEYS)
        pid = _first(row, _ID_KEYS)
        if pid is None and image is None:
            raise ValueError(f"{src}: row {i} has neither an id ({'/'.join(_ID_KEYS)}) nor an image "
                             f"({'/'.join(_IMAGE_KEYS)})")
        path = None
        if image is not None:
            p = Path(str(image)).expanduser()
            path = str(p if p.is_absolute() else root / p)
        pid = str(pid) if pid is not None else Path(str(image)).stem
        parent = parents.get(pid)
        if parent is None:
            parent = parents[pid] = Parent(pid, path)
        elif parent.path is None:
            parent.path = path
        caps = row.get("captions")
        if isinstance(caps, str):  # CSV: a JSON list or '|'-separated
            try:
                caps = json.loads(caps)
            except json.JSONDecodeError:
                caps = caps.split("|")
        caps = list(caps or [])
        cap = _first(row, _CAPTION_KEYS)
        if cap is not None:
            caps.append(cap)
        parent.captions += [str(c).strip() for c in caps if str(c).strip()]
    return list(parents.values())


def coco_captions_manifest(annotations: str | os.PathLike, images_dir: str | os.PathLike,
                           out: str | os.PathLike, limit: int | None = None) -> int:
    """COCO `captions_<split>.json` -> a captions manifest (JSONL: id = file stem, image = path
    relative to the manifest's folder when possible, captions = all of that image's captions, in
    annotation order). Images in id order; `limit` keeps the first N. Returns the number written."""
    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    caps: dict[int, list[str]] = {}
    for a in data.get("annotations", []):
        caps.setdefault(a["image_id"], []).append(str(a["caption"]).strip())
    images = sorted(data.get("images", []), key=lambda im: im["id"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for im in images:
        if im["id"] not in caps:
            continue
        path = Path(images_dir) / im["file_name"]
        try:
            rel = os.path.relpath(path.resolve(), out.parent.resolve())
        except ValueError:  # another drive (Windows)
            rel = str(path.resolve())
        lines.append({"id": Path(im["file_name"]).stem, "image": rel, "coco_id": im["id"], "captions": caps[im["id"]]})
        if limit and len(lines) >= limit:
            break
    write_jsonl(out, lines)
    return len(lines)


# ================================================================ plan
def item_seed(base_seed: int, parent: str, caption_index: int, generator: str) -> int:
    """The item's seed (0 .. 2**32-1): a hash of base seed, parent, caption index, generator."""
    h = hashlib.sha256(f"{base_seed}:{parent}:{caption_index}:{generator}".encode()).hexdigest()
    return int(h[:8], 16)


def parent_names(parents: Sequence[Parent]) -> list[str]:
    """File-safe names for parents: the sanitised id, plus a short hash of it when two collide."""
    names = [safe_name(p.id) for p in parents]
    count: dict[str, int] = {}
    for n in names:
        count[n] = count.get(n, 0) + 1
    return [n if count[n] == 1 else f"{n}_{hashlib.sha1(p.id.encode()).hexdigest()[:8]}"
            for n, p in zip(names, parents)]


def plan_fakes(parents: Sequence[Parent], specs: Sequence[GeneratorSpec], seed: int = 0, fmt: str = "png",
               max_captions: int | None = None) -> list[dict]:
    """One item per (generator, parent, caption): generator-major (one pipeline loaded at a time),
    then parents in input order, then captions."""
    ext = FORMATS[normalise_format(fmt)]
    names = parent_names(parents)
    items = []
    for spec in specs:
        for parent, name in zip(parents, names):
            caps = parent.captions[:max_captions] if max_captions else parent.captions
            for k, caption in enumerate(caps):
                items.append({
                    "key": f"{spec.name}/{name}_c{k}", "path": f"fake/{spec.name}/{name}_c{k}{ext}",
                    "generator": spec.name, "parent": parent.id, "parent_path": parent.path,
                    "caption": caption, "caption_index": k, "seed": item_seed(seed, parent.id, k, spec.name),
                })
    return items


# ================================================================ the worker
class GenerateBatch(PipelineWorker):
    """Text-to-image fakes for one batch of planned items (the picklable per-batch callable of
    both engines; one pipeline per process, loaded on first call).

    options: out_dir (where `path` is relative to), format, quality, safety_checker.
    batch: columns key, path, generator, parent, parent_path, caption, caption_index, seed.
    returns: columns key, error ("" or "<code>: <message>"), record (the manifest line, JSON)."""

    task = "text2img"

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        n = len(keys)
        errors: list[str] = [""] * n
        records: list[dict | None] = [None] * n
        try:
            pipe = self.pipe
            info = self.generator_info()
            kwargs = {"prompt": [str(c) for c in batch["caption"]], "num_inference_steps": int(self.spec.steps),
                      "generator": torch_generators(batch["seed"])}
            if self.spec.width and self.spec.height:
                kwargs.update(width=int(self.spec.width), height=int(self.spec.height))
            if self.spec.guidance is not None:
                kwargs["guidance_scale"] = float(self.spec.guidance)
            if self.spec.negative:
                kwargs["negative_prompt"] = [self.spec.negative] * n
            result = pipe(**kwargs)
        except Exception as e:  # noqa: BLE001 - one batch's failure is that batch's problem
            return result_columns(keys, [f"generation_failed: {type(e).__name__}: {e}"] * n, records)
        images = list(result.images)
        flags = getattr(result, "nsfw_content_detected", None) or [False] * n
        out_dir = Path(self.options["out_dir"])
        fmt = normalise_format(self.options.get("format", "png"))
        quality = int(self.options.get("quality", 95))
        for i in range(n):
            if flags[i]:
                errors[i] = "nsfw_filtered: the pipeline's safety checker blanked this image (not written)"
                continue
            img = images[i]
            try:
                atomic_write(out_dir / str(batch["path"][i]), encode_image(img, fmt, quality))
            except OSError as e:
                errors[i] = f"write_failed: {e}"
                continue
            records[i] = {
                "key": keys[i], "path": str(batch["path"][i]), "label": "fake", "generator": self.spec.name,
                "parent": str(batch["parent"][i]),
                "parent_path": optional(batch, "parent_path", i),
                "caption": str(batch["caption"][i]), "caption_index": int(batch["caption_index"][i]),
                "seed": int(batch["seed"][i]), "steps": info["steps"], "guidance": info["guidance"],
                "width": img.width, "height": img.height, "format": fmt,
                "quality": quality if fmt != "png" else None,
                "model": info["model"], "revision": info["revision"], "pipeline": info["pipeline"],
                "scheduler": info["scheduler"], "dtype": info["dtype"],
            }
        return result_columns(keys, errors, records)


# ================================================================ the build
@dataclass
class BuildReport:
    out_dir: Path
    planned: int = 0                 # fake items in the plan
    written: int = 0                 # fakes written by this run
    skipped: int = 0                 # fakes already done (resume)
    reals_written: int = 0
    reals_skipped: int = 0
    failed: int = 0
    errors: list = field(default_factory=list)     # [(key, "<code>: <message>")]
    warnings: list = field(default_factory=list)   # format guard findings
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)    # generator -> (images, seconds)

    def __str__(self) -> str:
        s = (f"{self.written} fakes written, {self.skipped} already done, {self.failed} failed "
             f"(of {self.planned} planned); {self.reals_written} reals written, {self.reals_skipped} already done")
        for gen, (n, sec) in self.seconds.items():
            if n:
                s += f"\n  {gen}: {n} images in {sec:.1f} s ({n / sec:.3g} images/s)"
        return s


def _check_conflicts(done: dict[str, dict], items: Sequence[dict], specs: Sequence[GeneratorSpec], fmt: str) -> None:
    by_name = {s.name: s for s in specs}
    planned = {it["key"]: it for it in items}
    for key, rec in done.items():
        it = planned.get(key)
        if it is None or rec.get("label") != "fake":
            continue
        spec = by_name[it["generator"]]
        wanted = {"model": spec.ref, "steps": spec.steps, "seed": it["seed"], "format": fmt,
                  "caption": it["caption"]}
        if spec.width and spec.height:
            wanted.update(width=spec.width, height=spec.height)
        if spec.guidance is not None:
            wanted["guidance"] = spec.guidance
        diff = {k: (rec.get(k), v) for k, v in wanted.items() if rec.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{key} was already built with other settings ({what}); give the generator "
                             f"another name, or build into another --out")


def _early_format_note(parents: Sequence[Parent], fmt: str, write_reals: bool) -> str | None:
    from ..data.samples import REAL, Sample
    from ..evaluation.format_guard import format_report

    if write_reals:
        return None
    sample = [Sample(path=p.path, label=REAL) for p in parents[:200] if p.path]
    if not sample:
        return None
    dominant = format_report(sample)["real"]["dominant_format"]
    want = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    if dominant and dominant != want:
        return (f"the real parents are mostly {dominant} but fakes will be {want}: a detector can learn the "
                f"format. Use --format {dominant.lower()} or --reals (writes the reals re-encoded like the fakes)")
    return None


def format_guard(out_dir: Path, records: Iterable[dict], parents: Sequence[Parent]) -> list[str]:
    """check_formats on the finished set: the fakes against the written reals, or against the
    parents' own files when no reals were written."""
    from ..data.samples import FAKE, REAL, Sample
    from ..evaluation.format_guard import check_formats

    recs = list(records)
    fakes = [Sample(path=str(out_dir / r["path"]), label=FAKE) for r in recs if r.get("label") == "fake"]
    reals = [Sample(path=str(out_dir / r["path"]), label=REAL) for r in recs if r.get("label") == "real"]
    if not reals:
        reals = [Sample(path=p.path, label=REAL) for p in parents if p.path]
    return check_formats(fakes + reals) if fakes and reals else []


def _load_real(path: str, crop_size: int | None):
    from PIL import Image

    from ..images import decode_image

    img = decode_image(path)
    if crop_size:
        w, h = img.size
        f = crop_size / min(w, h)
        img = img.resize((max(crop_size, round(w * f)), max(crop_size, round(h * f))), Image.LANCZOS)
        w, h = img.size
        x0, y0 = (w - crop_size) // 2, (h - crop_size) // 2
        img = img.crop((x0, y0, x0 + crop_size, y0 + crop_size))
    return img


def build_fakes(parents: Sequence[Parent] | str | os.PathLike, generators: Sequence[GeneratorSpec | str],
                out_dir: str | os.PathLike, *, fmt: str = "png", quality: int = 95, size: int | None = None,
                steps: int | None = None, guidance: float | None = None, seed: int = 0, batch_size: int = 4,
                limit: int | None = None, max_new: int | None = None, max_captions: int | None = None,
                device: str | None = None, dtype: str | None = None, write_reals: bool = False,
                real_crop: bool = False, safety_checker: bool = True, engine: str = "local",
                ray_actors: int | None = None, ray_gpus_per_actor: float | None = None,
                ray_address: str | None = None, images_root: str | os.PathLike | None = None, loader: Callable | None = None,
                log: Callable[[str], None] | None = None) -> BuildReport:
    """Generate fakes from the parents' captions with every generator (see the module doc).

    `size`, `steps`, `guidance`, `device`, `dtype` fill what a generator spec leaves open (the
    spec's own options win). `limit`: use the first N parents. `max_new`: stop after N new fakes
    (a chunk of a long build). `write_reals`: also write each parent into real/, re-encoded in
    `fmt`/`quality` (`real_crop`: centre-cropped and resized to `size` x `size` first), so the set
    has no format shortcut. `engine`: "local" (this process) or "ray" (one pipeline per Ray
    actor; OUT on shared storage). `loader(spec, task, safety_checker=...)` replaces
    `load_pipeline` (tests)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    fmt = normalise_format(fmt)
    if isinstance(parents, (str, os.PathLike)):
        parents = read_captions(parents, images_root)
    parents = list(parents)[:limit] if limit else list(parents)
    specs = [parse_generator(g).with_defaults(size=size, device=device, dtype=dtype, steps=steps, guidance=guidance)
             for g in generators]
    if not specs:
        raise ValueError("no generator given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"generator names must be unique, got {names}")
    if loader is None:
        for spec in specs:
            check_task(spec, "text2img")
    if real_crop and not size:
        raise ValueError("real_crop needs size (the side the reals are cropped to)")
    if engine not in ("local", "ray"):
        raise ValueError("engine must be local or ray")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = BuildReport(out)

    no_caption = [p.id for p in parents if not p.captions]
    if no_caption:
        report.notes.append(f"{len(no_caption)} parents have no caption and make no fakes (e.g. {no_caption[0]})")
    note = _early_format_note(parents, fmt, write_reals)
    if note:
        report.notes.append(note)
    for n in report.notes:
        log(f"note: {n}")

    # resume: what is done, what failed for good
    manifest = out / MANIFEST
    records = read_jsonl(manifest)
    kept = [r for r in records if r.get("key") and (out / r.get("path", "")).is_file()]
    dedup: dict[str, dict] = {}
    for r in kept:
        dedup[r["key"]] = r
    if len(dedup) != len(records):  # lines whose file vanished, or duplicates: rewrite without them
        write_jsonl(manifest, dedup.values())
    done = dedup
    final_errors = {e["key"] for e in read_jsonl(out / ERRORS)
                    if str(e.get("error", "")).split(":")[0] in NOT_RETRIED}

    items = plan_fakes(parents, specs, seed, fmt, max_captions)
    report.planned = len(items)
    _check_conflicts(done, items, specs, fmt)
    (out / BUILD_INFO).write_text(json.dumps({
        "command": "build fakes", "generators": [s.to_dict() for s in specs],
        "options": {"format": fmt, "quality": quality, "size": size, "seed": seed, "batch_size": batch_size,
                    "write_reals": write_reals, "real_crop": real_crop, "safety_checker": safety_checker,
                    "max_captions": max_captions, "engine": engine},
        "parents": len(parents)}, indent=2) + "\n")

    bar = None
    errors_out = JsonlAppender(out / ERRORS)
    sink = JsonlAppender(manifest)

    def fail(key: str, message: str) -> None:
        report.failed += 1
        report.errors.append((key, message))
        errors_out.write({"key": key, "error": message, "time": time.time()})
        log(f"failed {key}: {message}")

    try:
        if write_reals:
            for parent, name in zip(parents, parent_names(parents)):
                key = f"real/{name}"
                if key in done:
                    report.reals_skipped += 1
                    continue
                if not parent.path:
                    continue
                try:
                    img = _load_real(parent.path, size if real_crop else None)
                except Exception as e:  # noqa: BLE001 - ImageError, or a resize failure
                    fail(key, getattr(e, "reason", None) or f"{type(e).__name__}: {e}")
                    continue
                rel = f"real/{name}{FORMATS[fmt]}"
                atomic_write(out / rel, encode_image(img, fmt, quality))
                rec = {"key": key, "path": rel, "label": "real", "generator": None, "parent": parent.id,
                       "parent_path": parent.path, "caption": parent.captions[0] if parent.captions else None,
                       "captions": parent.captions, "width": img.width, "height": img.height, "format": fmt,
                       "quality": quality if fmt != "png" else None}
                sink.write(rec)
                done[key] = rec
                report.reals_written += 1

        pending = []
        for it in items:
            if it["key"] in done:
                report.skipped += 1
            elif it["key"] not in final_errors:
                pending.append(it)
        if max_new is not None:
            pending = pending[:max(0, max_new)]
        if report.skipped:
            log(f"resuming: {report.skipped} of {len(items)} fakes already in {out}")

        options = {"out_dir": str(out.resolve()), "format": fmt, "quality": quality, "safety_checker": safety_checker}
        if loader is not None:
            options["loader"] = loader
        bar = progress(total=len(pending), desc="build fakes", min_total=1)
        for spec in specs:
            todo = [it for it in pending if it["generator"] == spec.name]
            if not todo:
                continue
            t0, before = time.perf_counter(), report.written

            def on_batch(batch: dict) -> None:
                for key, error, rec in iter_results(batch):
                    bar.update(1)
                    if error:
                        fail(key, error)
                    elif rec is not None:
                        sink.write(rec)
                        done[key] = rec
                        report.written += 1

            if engine == "ray":
                run_ray(GenerateBatch, (spec.to_dict(), {k: v for k, v in options.items() if k != "loader"}),
                        todo, batch_size, on_batch, actors=ray_actors, gpus_per_actor=ray_gpus_per_actor,
                        address=ray_address)
            else:
                run_local(GenerateBatch(spec, options), todo, batch_size, on_batch)
            report.seconds[spec.name] = (report.written - before, time.perf_counter() - t0)
    finally:
        sink.close()
        errors_out.close()
        if bar is not None:
            bar.close()

    warn_format_shortcuts(format_guard(out, done.values(), parents), report.warnings, log)
    return report


__all__ = ["Parent", "read_captions", "coco_captions_manifest", "item_seed", "parent_names", "plan_fakes",
           "GenerateBatch", "BuildReport", "build_fakes", "format_guard", "MANIFEST", "ERRORS"]
