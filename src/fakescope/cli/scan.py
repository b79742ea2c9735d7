"""`fakescope scan`: score images, videos and folders into a table, JSON lines or Parquet parts."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..clitools import Engine, value
from .common import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, MODEL_HELP, ScanFormat, err, log, one_line


def scan(
    paths: List[str] = typer.Argument(..., help="Image files or folders (walked recursively); '-' reads paths from stdin; also CSV/JSONL manifests (path column), tars and WebDataset shards (shards/x-{000..009}.tar), hf:<dataset>, cocofake:/genimage:/synthbuster: layouts (as train reads them)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results: a .jsonl file (one JSON line per image), '-' for JSON lines on stdout (the table then goes to stderr), or a folder of Parquet part files (a name without suffix, or an existing folder); re-running with the same --out resumes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    batch_size: int = typer.Option(0, help="Images per forward pass (0: what the backbone runs fastest at)."),
    workers: int = typer.Option(0, help="--engine local: decoding threads; --engine ray: model workers, one model each (0: automatic)."),
    max_pixels: int = typer.Option(89_478_485, help="Refuse images with more pixels than this."),
    max_bytes: int = typer.Option(50 * 2**20, help="Refuse files larger than this many bytes."),
    table: bool = typer.Option(True, help="Print the results table."),
    localize: bool = typer.Option(False, "--localize", help="Also map where each image was edited (adds map_mean / map_max, and edit_score / edited: a confident edit region makes the verdict fake)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="With --localize: write <name>_mask.png and <name>_overlay.png here."),
    localizer: Optional[str] = typer.Option(None, "--localizer", help="Localiser folder; default: the shipped one."),
    engine: Engine = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors, one model each; needs the ray extra)."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the Ray cluster to join (auto, HOST:6379 or ray://HOST:10001); default: start a local Ray."),
    cpus_per_worker: float = typer.Option(1.0, help="--engine ray: CPUs reserved per worker (its model and decoding threads)."),
    gpus_per_worker: float = typer.Option(-1.0, help="--engine ray: GPUs per worker; -1: one when the cluster has GPUs, else none."),
    shard_size: int = typer.Option(1000, help="Parquet output: images per part file, the unit of resume."),
    out_format: ScanFormat = typer.Option("auto", "--format", help="auto: Parquet for a folder or a name without suffix, else JSON lines."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Verdict threshold for this run instead of the model's; recorded in every line's `threshold`."),
    uncertain: bool = typer.Option(True, "--uncertain/--no-uncertain", help="Answer \"uncertain\" (with a reason) where the model's rule says it cannot know; --no-uncertain: always real or fake."),
    every_expert: bool = typer.Option(False, "--every-expert", help="A model of several experts: run every expert on every image, so each line has every expert's score (slower; the verdicts are the same). Without it an expert runs only where it can change the verdict, and is null elsewhere."),
    # provenance and video (README "Provenance" and "Video")
    provenance: str = typer.Option("decide", "--provenance", help="off, report (a provenance object per image: C2PA, IPTC/XMP, EXIF, PNG generation chunks) or decide (also: a valid C2PA or metadata AI claim makes the verdict fake, reason 'provenance: ...')."),
    frames: int = typer.Option(16, "--frames", min=1, help="Videos (.mp4 .webm .mov .mkv .avi; the video extra): frames sampled, evenly spaced."),
    fps: float = typer.Option(0.0, "--fps", min=0.0, help="Videos: sample this many frames per second instead of --frames (at most 256 per video)."),
    max_video_bytes: int = typer.Option(2 * 2**30, help="Refuse video files larger than this many bytes."),
    max_video_seconds: float = typer.Option(3 * 3600.0, help="Refuse videos longer than this."),
):
    """Score images: probability each was AI-generated, and a verdict at the model's threshold.

    The same per-batch code (fakescope.scale.batch.ScoreBatch) runs here or, with --engine ray,
    on a Ray cluster. With --localize (local engine, JSONL output), a localiser maps the
    probability that each pixel was edited; the JSON line gains map_mean (mean of the map) and
    map_max (max of the 3x3-averaged map), the image-level scores derived from it, and --masks
    writes the map (8-bit grey, 0-255 = probability, the image's size) and a heatmap overlay per
    image."""
    from ..detector import load_detector
    from ..images import ImageLimits
    from ..scale.engines import EngineOptions
    from ..scale.inputs import enumerate_inputs

    engine, out_format = value(engine), value(out_format)
    to_stdout = out is not None and str(out) == "-"
    if to_stdout and out_format == "parquet":
        raise typer.BadParameter("--out - writes JSON lines", param_hint="--format")
    fmt = "jsonl" if to_stdout else _out_format(out, out_format)
    loc = None
    try:
        det = load_detector(model)
        if threshold is not None:
            det.threshold = threshold
        log.debug(f"detector {one_line(det.name)} from {one_line(model or 'the shipped default')}, threshold {det.threshold:.4f}")
        if localize or masks:
            from ..localize.evaluate import load_localizer
            loc = load_localizer(localizer)
    except (FileNotFoundError, ValueError) as e:  # a missing or foreign model folder: say so, no traceback
        err.print(f"[red]cannot load model:[/red] {one_line(e)}")
        raise typer.Exit(EXIT_USAGE)
    if loc is not None and (engine != "local" or fmt == "parquet"):
        err.print("[red]--localize runs with --engine local and a JSONL --out[/red]")
        raise typer.Exit(EXIT_USAGE)
    if masks:
        masks.mkdir(parents=True, exist_ok=True)
    limits = ImageLimits(max_bytes=max_bytes, max_pixels=max_pixels)
    score_options = _scan_evidence_options(provenance, frames, fps, max_video_bytes, max_video_seconds)
    if every_expert:  # only when set: a job resumed from before the option existed keeps its identity
        score_options["every_expert"] = True
    try:
        inputs = enumerate_inputs(paths, limits=limits, videos=True)
    except (ValueError, ImportError, KeyError) as e:  # a manifest without a path column, hf: without datasets, ...
        err.print(f"[red]cannot read inputs:[/red] {one_line(e)}")
        raise typer.Exit(EXIT_USAGE)
    if not len(inputs):
        err.print("[red]no images found[/red] in " + one_line(" ".join(paths)))
        raise typer.Exit(EXIT_USAGE)
    opts = EngineOptions(engine=engine, decode_workers=(workers or None) if engine == "local" else None,
                         address=address, workers=workers if engine == "ray" else 0,
                         cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    if fmt == "parquet":
        from ..scale.jobs import scan_job
        from ..scale.outputs import JobMismatch, read_parts
        try:
            scan_job(inputs, out, model, opts, limits, batch_size or None, shard_size, log=log.info, abstain=uncertain,
                     threshold=threshold, score_options=score_options)
        except JobMismatch as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(EXIT_USAGE)
        results = read_parts(out).to_pylist()
    else:
        from functools import partial

        from ..scale.jobs import scan_to_jsonl
        from ..scale.maps import add_maps
        from ..scale.outputs import ResultsFile, ResultsStream
        # a results file is locked, checked to be one (not an input, not any other file) and resumed
        sink = ResultsStream(sys.stdout) if to_stdout else ResultsFile(out) if out else None
        enrich = partial(add_maps, loc, masks=masks, used=set(), video=score_options["video"]) if loc else None
        results = scan_to_jsonl(inputs, sink, det.id, det.version, model, opts, limits, batch_size or None, shard_size,
                                require="map_mean" if loc is not None else None, given=paths, enrich=enrich,
                                log=lambda m: log.info(one_line(m)), abstain=uncertain, threshold=threshold,
                                score_options=score_options)
    failed = sum(r["error"] is not None for r in results)
    if table:  # stdout belongs to the JSON lines with --out -
        _print_table(results, f"{det.name} · threshold {det.threshold:.3f}", err if to_stdout else Console())
    log.info(f"{len(results) - failed} scored, {failed} failed" + (f"; results in {out}" if out and not to_stdout else ""))
    raise typer.Exit(EXIT_OK if failed == 0 else EXIT_ALL_FAILED if failed == len(results) else EXIT_SOME_FAILED)


def _scan_evidence_options(provenance: str, frames: int, fps: float, max_video_bytes: int,
                           max_video_seconds: float) -> dict:
    """scan's provenance mode and video sampling, as ScoreBatch takes them."""
    from dataclasses import asdict

    from ..data.video import VideoLimits
    from ..provenance import MODES

    if provenance not in MODES:
        raise typer.BadParameter(f"must be one of {', '.join(MODES)}", param_hint="--provenance")
    video = VideoLimits(frames=frames, fps=fps, max_bytes=max_video_bytes, max_seconds=max_video_seconds)
    return {"provenance": provenance, "video": asdict(video)}


def _out_format(out: Optional[Path], fmt: str) -> str:
    """jsonl or parquet for scan --out: an existing folder or a name without suffix is a Parquet folder."""
    if out is None or fmt != "auto":
        return "jsonl" if out is None else fmt
    if out.is_dir():
        return "parquet"
    return "jsonl" if out.exists() or out.suffix else "parquet"


def _print_table(results: list[dict], model: str, console: Console, limit: int = 200) -> None:
    t = Table(title=f"fakescope · {one_line(model)}", title_justify="left")
    t.add_column("file", overflow="fold")
    t.add_column("P(fake)", justify="right")
    t.add_column("verdict")
    maps = any("map_max" in r for r in results)
    if maps:
        # the localiser's image score where it has an image rule (what the verdict used), else the map max
        rule = any("edit_score" in r for r in results)
        t.add_column("edit score" if rule else "edited (map max)", justify="right")
    for r in results[:limit]:
        key = "edit_score" if maps and rule else "map_max"
        extra = [f"{r[key]:.3f}" if key in r else "-"] if maps else []
        if r["error"]:
            t.add_row(one_line(r["path"]), "-", f"[red]error: {one_line(r['error'])}[/red]", *extra)
        else:
            colour = {"fake": "magenta", "uncertain": "yellow"}.get(r["label"], "green")
            verdict = r["label"] + (f" ({r['reason'].split(':')[0]})" if r.get("reason") else "")
            t.add_row(one_line(r["path"]), f"{r['score']:.3f}", f"[{colour}]{one_line(verdict)}[/{colour}]", *extra)
    console.print(t)
    if len(results) > limit:
        console.print(f"... {len(results) - limit} more rows (see --out)")
