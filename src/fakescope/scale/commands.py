"""`fakescope features`: backbone features of many images, here or on a Ray cluster.

Registered in cli/__init__.py (`app.command("features")(features)`); Ray and pyarrow load only when it runs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..clitools import Engine, value

err = Console(stderr=True)
log = logging.getLogger(__name__)  # shown by the CLI at its --quiet/--verbose level
EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 2, 3, 4


def features(
    paths: List[str] = typer.Argument(..., help="Images: files, folders, '-' (paths on stdin), CSV/JSONL manifests, tars / WebDataset shards (shards/x-{000..009}.tar), hf:<dataset>, cocofake:/genimage:/synthbuster: layouts."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the Parquet part files, job.json and manifest.json; re-running with the same folder resumes."),
    backbone: str = typer.Option("effnet-lite0", help="Backbone spec string (see `fakescope backbones`)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache to add the features to (default ~/.cache/fakescope/features), so train / eval find them."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Write the Parquet parts only."),
    engine: Engine = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors, one model each; needs the ray extra)."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the Ray cluster to join (auto, HOST:6379 or ray://HOST:10001); default: start a local Ray."),
    workers: int = typer.Option(0, help="--engine local: decoding threads; --engine ray: model workers, one model each (0: automatic)."),
    cpus_per_worker: float = typer.Option(1.0, help="--engine ray: CPUs reserved per worker (its model and decoding threads)."),
    gpus_per_worker: float = typer.Option(-1.0, help="--engine ray: GPUs per worker; -1: one when the cluster has GPUs, else none."),
    batch_size: int = typer.Option(0, help="Images per forward pass (0: what the backbone runs fastest at)."),
    shard_size: int = typer.Option(1000, help="Images per part file, the unit of resume."),
    max_pixels: int = typer.Option(89_478_485, help="Refuse images with more pixels than this."),
    max_bytes: int = typer.Option(50 * 2**20, help="Refuse files larger than this many bytes."),
):
    """Embed images with a frozen backbone: Parquet part files (path, sha256, feature, error, label,
    generator, text) plus the feature cache's manifest; the features also go into the feature cache.
    Local and Ray runs write the same files, and either resumes the other's folder."""
    from ..backbones import parse_spec
    from ..features import DEFAULT_CACHE
    from ..images import ImageLimits
    from .engines import EngineOptions
    from .inputs import enumerate_inputs
    from .jobs import features_job
    from .outputs import JobMismatch, read_parts

    engine = value(engine)
    try:
        parse_spec(backbone)
        inputs = enumerate_inputs(paths, limits=ImageLimits(max_bytes=max_bytes, max_pixels=max_pixels))
    except (ValueError, ImportError, KeyError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not len(inputs):
        err.print("[red]no images found[/red] in " + " ".join(paths))
        raise typer.Exit(EXIT_USAGE)
    opts = EngineOptions(engine=engine, decode_workers=(workers or None) if engine == "local" else None,
                         address=address, workers=workers if engine == "ray" else 0,
                         cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    try:
        res = features_job(inputs, out, backbone, None if no_cache else (cache or DEFAULT_CACHE), opts,
                           ImageLimits(max_bytes=max_bytes, max_pixels=max_pixels), batch_size or None,
                           shard_size, log=log.info)
    except JobMismatch as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(EXIT_USAGE)
    errors = read_parts(out, ["error"]).column("error").to_pylist()
    failed = sum(e is not None for e in errors)
    log.info(f"{len(errors) - failed} embedded, {failed} failed; {len(res.written)} part file(s) written, "
              f"{len(res.skipped)} already complete, in {out}"
              + ("" if no_cache else f"; {res.cached} new rows in the feature cache"))
    raise typer.Exit(EXIT_OK if failed == 0 else EXIT_ALL_FAILED if failed == len(errors) else EXIT_SOME_FAILED)
