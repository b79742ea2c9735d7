"""`fakescope build fakes|inpaint|coco-captions`: the commands over the dataset builder.

diffusers is imported only when a build runs, so `fakescope --help` works without it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..clitools import Engine, ImageFormat, value

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 2, 3, 4

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Build training/evaluation sets: fakes from captions (COCOFake/D3-style), "
                       "inpainted real photos with masks (Dolos-style). Needs the `generate` extra (diffusers).")
err = Console(stderr=True)
log = logging.getLogger(__name__)  # shown by the CLI at its --quiet/--verbose level

GENERATOR_HELP = ("Generator spec, repeatable: [NAME=]HUB_ID_OR_DIR[?steps=30&guidance=7.5&size=512&...], or an "
                  "alias (sd14, sd15, sd20, sd21, sdxl; sd15-inpaint, sd2-inpaint, sdxl-inpaint). See docs/datasets.md.")


def _exit_code(written: int, skipped: int, failed: int) -> int:
    if failed and not written and not skipped:
        return EXIT_ALL_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise typer.BadParameter(f"{what}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _dry_run(items_by_gen: dict[str, tuple[int, int, int]]) -> None:
    from rich.table import Table

    t = Table(title="plan (nothing generated: --dry-run)", title_justify="left")
    for col in ("generator", "planned", "done", "to do", "steps", "UNet steps to run"):
        t.add_column(col, justify="right")
    for gen, (planned, done, steps) in items_by_gen.items():
        t.add_row(gen, str(planned), str(done), str(planned - done), str(steps), f"{(planned - done) * steps:,}")
    Console().print(t)


@app.command()
def fakes(
    captions: Path = typer.Option(..., "--captions", help="Captions manifest (JSONL/CSV): image path and/or id, caption or captions list."),
    generator: List[str] = typer.Option(..., "--generator", "-g", help=GENERATOR_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder (fake/<generator>/, real/, manifest.jsonl); re-running resumes."),
    images_root: Optional[Path] = typer.Option(None, help="Folder relative image paths are under (default: the manifest's folder)."),
    size: Optional[int] = typer.Option(None, help="Output width = height in pixels (default: each pipeline's native size; a spec's size= wins)."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps for generators whose spec gives none (default 30)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale for generators whose spec gives none (default: the pipeline's)."),
    format: ImageFormat = typer.Option("png", "--format", help="jpeg, png or webp: the fakes' (and --reals') file format."),
    quality: int = typer.Option(95, help="JPEG/WebP quality."),
    seed: int = typer.Option(0, help="Base seed; every item's seed derives from it, the parent, the caption and the generator."),
    batch_size: int = typer.Option(4, help="Prompts per pipeline call."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N parents of the manifest."),
    max_new: Optional[int] = typer.Option(None, help="Stop after writing N new fakes (build in chunks; rerun to continue)."),
    max_captions: Optional[int] = typer.Option(None, help="Use at most the first N captions of each parent."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="fp16, bf16 or fp32 (default: fp16 on CUDA, fp32 on CPU)."),
    reals: bool = typer.Option(False, "--reals", help="Also write every parent into real/, re-encoded in the same format and quality as the fakes."),
    real_crop: bool = typer.Option(False, "--real-crop", help="With --reals: centre-crop and resize the reals to --size x --size, as the fakes are."),
    safety_checker: bool = typer.Option(True, "--safety-checker/--no-safety-checker", help="Keep the pipeline's NSFW safety checker (flagged images are not written)."),
    engine: Engine = typer.Option("local", help="local (this process) or ray (one pipeline per Ray actor; --out on shared storage)."),
    ray_actors: Optional[int] = typer.Option(None, help="--engine ray: actors (default: one per cluster GPU)."),
    ray_gpus_per_actor: Optional[float] = typer.Option(None, help="--engine ray: GPUs per actor (default 1 with GPUs, else 0)."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: cluster address (default: start a local Ray)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (images and denoising steps per generator) and stop."),
):
    """Generate fakes from the captions of real images with every --generator (COCOFake/D3-style).

    manifest.jsonl links every fake to its real parent, caption, generator, seed, steps and guidance; rerunning with the same --out resumes."""
    from .fakes import MANIFEST, build_fakes, plan_fakes, read_captions

    engine, format = value(engine), value(format)
    from ..files import read_jsonl
    from .spec import parse_generator

    try:
        parents = read_captions(captions, images_root)
        if dry_run:
            specs = [parse_generator(g).with_defaults(size=size, steps=steps) for g in generator]
            items = plan_fakes(parents[:limit] if limit else parents, specs, seed, format, max_captions)
            done = {r.get("key") for r in read_jsonl(out / MANIFEST, repair=False)}
            _dry_run({s.name: (sum(it["generator"] == s.name for it in items),
                               sum(it["generator"] == s.name and it["key"] in done for it in items), s.steps)
                      for s in specs})
            return
        report = build_fakes(parents, generator, out, fmt=format, quality=quality, size=size, steps=steps,
                             guidance=guidance, seed=seed, batch_size=batch_size, limit=limit, max_new=max_new,
                             max_captions=max_captions, device=device, dtype=dtype, write_reals=reals,
                             real_crop=real_crop, safety_checker=safety_checker, engine=engine,
                             ray_actors=ray_actors, ray_gpus_per_actor=ray_gpus_per_actor,
                             ray_address=ray_address, log=log.info)
    except (ValueError, ImportError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE)
    log.info(str(report))
    raise typer.Exit(_exit_code(report.written, report.skipped, report.failed))


@app.command()
def inpaint(
    images: List[str] = typer.Option(..., "--images", help="Real images: folder, files, .tar or manifest (real-labelled images only); repeatable."),
    generator: List[str] = typer.Option(..., "--generator", "-g", help=GENERATOR_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder (real/, fake/<generator>/, mask/, table.csv); re-running resumes."),
    masks: str = typer.Option("auto", help="'auto' (generated shapes) or a folder with <stem>.png / <stem>_mask.png per image."),
    per_image: int = typer.Option(1, help="Inpainted versions per real image (each with its own mask and seed)."),
    mask_kinds: str = typer.Option("box,ellipse,strokes", help="--masks auto: shapes to draw from (box, ellipse, strokes, blob)."),
    area: str = typer.Option("0.05,0.35", help="--masks auto: range of the masked fraction of the image."),
    prompt: str = typer.Option("", help="Prompt for every image (default empty: the model fills in from context)."),
    captions: Optional[Path] = typer.Option(None, help="Captions manifest: an image's caption (matched by id or file stem) replaces --prompt."),
    size: Optional[int] = typer.Option(None, help="Longer side of the working size (default: the spec's size=, else the pipeline's native size, e.g. 512 for SD 2, 1024 for SDXL); sides are rounded to multiples of 8."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps for generators whose spec gives none (default 30)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale for generators whose spec gives none."),
    format: ImageFormat = typer.Option("png", "--format", help="jpeg, png or webp, for both real/ and fake/ (masks are always PNG)."),
    quality: int = typer.Option(95, help="JPEG/WebP quality."),
    paste_back: bool = typer.Option(True, "--paste-back/--no-paste-back", help="Copy the unmasked pixels back from the real (default), so the mask is exactly what changed."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(4),
    limit: Optional[int] = typer.Option(None, help="Use only the first N real images."),
    max_new: Optional[int] = typer.Option(None, help="Stop after N new inpainted images."),
    device: Optional[str] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None),
    safety_checker: bool = typer.Option(True, "--safety-checker/--no-safety-checker"),
    engine: Engine = typer.Option("local", help="local or ray (one pipeline per Ray actor)."),
    ray_actors: Optional[int] = typer.Option(None),
    ray_gpus_per_actor: Optional[float] = typer.Option(None),
    ray_address: Optional[str] = typer.Option(None),
):
    """Inpaint regions of real images into (real, fake, mask) triplets (Dolos-style).

    table.csv has the CocoGlide columns (real,fake,mask,prompt, ...), so `fakescope localizer train/eval --data OUT` reads the folder directly; rerunning with the same --out resumes."""
    from .inpaint import build_inpaint

    engine, format = value(engine), value(format)

    try:
        report = build_inpaint(images, generator, out, masks=masks, per_image=per_image,
                               mask_kinds=[k.strip() for k in mask_kinds.split(",") if k.strip()],
                               area=_floats(area, 2, "--area"), prompt=prompt, captions=captions, size=size,
                               steps=steps, guidance=guidance, fmt=format, quality=quality, paste_back=paste_back,
                               seed=seed, batch_size=batch_size, limit=limit, max_new=max_new, device=device,
                               dtype=dtype, safety_checker=safety_checker, engine=engine, ray_actors=ray_actors,
                               ray_gpus_per_actor=ray_gpus_per_actor, ray_address=ray_address, log=log.info)
    except (ValueError, ImportError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE)
    log.info(str(report))
    raise typer.Exit(_exit_code(report.written, report.skipped, report.failed))


@app.command("coco-captions")
def coco_captions(
    annotations: Path = typer.Argument(..., help="COCO captions file, e.g. annotations/captions_train2017.json."),
    images_dir: Path = typer.Argument(..., help="The folder of that split's images, e.g. train2017/."),
    out: Path = typer.Option(..., "--out", help="Captions manifest to write (JSONL: id, image, captions)."),
    limit: Optional[int] = typer.Option(None, help="Keep the first N images (by COCO id)."),
):
    """Turn COCO caption annotations into the captions manifest `build fakes` reads."""
    from .fakes import coco_captions_manifest

    try:
        n = coco_captions_manifest(annotations, images_dir, out, limit)
    except (ValueError, KeyError, OSError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(EXIT_USAGE)
    log.info(f"{n} images with their captions written to {out}")
