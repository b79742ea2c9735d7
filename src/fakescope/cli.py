"""The `fakescope` command line (Typer): the scan, train, eval, calibrate, compare, leave-out and
backbones commands, and the registration of the command groups defined beside their packages."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from .clitools import Engine, choice, env_settings, read_config, value
from .evaluation.fmt import fmt_metric as fmt

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 2, 3, 4

DEFAULT_HELP = """\
With no --model, the shipped default detector is used: a linear probe on frozen CLIP ViT-B/16
image embeddings (runs offline), trained on CIFAKE thumbnails, ImageNet and COCO photos, 335
camera photos from ~170 devices, and images from older generators, Stable Diffusion 1.x and
photoreal DALL-E 3 / SDXL / Stable Cascade people. Chosen by leave-one-source-out validation:
0.915-0.978 ROC-AUC on a photo source held out of training, 1.2% of camera photos from unseen devices
called fake at its threshold (5% of held-out reals). It answers "uncertain" (with a reason) on
images unlike its training data (--no-uncertain turns that off). Weak spots: 32 px thumbnails and
art-style generators it never saw, heavy re-compression, and local edits (inpainting), which it
misses at image level (use --localize). The previous EfficientNet default: --model effnet-v2.
Numbers: docs/results.md section 9."""
DEFAULT_HELP = " ".join(DEFAULT_HELP.split())  # one paragraph: the help renderer keeps line breaks

MODEL_HELP = ("Detector folder, or a Hugging Face Hub id user/repo[@revision] (an existing folder wins); "
              "default: the shipped model.")

err = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped at the terminal's width
log = logging.getLogger("fakescope.cli")  # not __name__: `torchrun -m fakescope.cli` runs it as __main__


class _ToConsole(logging.Handler):
    """Log records on stderr through the rich console (markup kept, one line each)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "" if record.levelno < logging.WARNING or record.getMessage().startswith("[") \
                else f"[yellow]{record.levelname.lower()}:[/yellow] "
            err.print(prefix + record.getMessage(), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never stop a command
            self.handleError(record)


def configure_logging(quiet: bool = False, verbose: int = 0) -> None:
    """Messages of every command (and the library's `fakescope.*` loggers) at one level: --quiet
    shows warnings and errors only (and no progress bars), --verbose adds debug messages."""
    root = logging.getLogger("fakescope")
    if not any(isinstance(h, _ToConsole) for h in root.handlers):
        root.addHandler(_ToConsole())
    root.propagate = False
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


ScanFormat = choice("ScanFormat", ["auto", "jsonl", "parquet"])
# the heads' registry names, listed here because heads.methods() imports torch on every --help;
# tests/test_cli_conventions.py fails when a registered head is missing from this list
Method = choice("Method", ["linear", "multilayer", "disentangle", "robust-mlp", "code", "natural-traces", "knn",
                           "ocsvm", "ocsvm-poly", "distance", "lowlevel", "fusion"])
TRAINS_AN_ENCODER = ("code", "natural-traces", "lowlevel", "fusion")  # checkpoints + the encoder go to MODEL_DIR/training
Modality = choice("Modality", ["image", "text", "both"])
Calibration = choice("Calibration", ["platt", "temperature", "none"])


def one_line(text: object) -> str:
    """Text from data (file names, messages quoting them) as one printable, markup-free line."""
    from rich.markup import escape
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text).replace("\n", " "))
    return escape(s)


class _Commands(TyperGroup):
    """Every command: an error the user can fix (errors.InputError: a bad input, model folder or
    output path; an OSError such as a full disk or a read-only folder) is one line and exit 2,
    never a traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from .errors import InputError
        try:
            return super().invoke(ctx)
        except InputError as e:
            err.print(f"[red]error:[/red] {one_line(e)}", soft_wrap=True)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"[red]error:[/red] {one_line(where + (e.strerror or str(e)))}", soft_wrap=True)
        except Exception as e:
            # an ImageError means images.py is loaded; importing it here would load Pillow and numpy
            # on every --help (Typer ends a help with an exception too)
            images = sys.modules.get(f"{__package__}.images")
            if images is None or not isinstance(e, images.ImageError):  # one image that stops a whole command
                raise
            err.print(f"[red]error:[/red] {one_line(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)


app = typer.Typer(cls=_Commands, add_completion=True, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Detect AI-generated images.\n\n" + DEFAULT_HELP)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        print(f"fakescope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit."),
          config: Optional[Path] = typer.Option(None, "--config", envvar="FAKESCOPE_CONFIG", show_default=False,
                                                help="TOML file with [scan] and [serve] tables of option values. "
                                                     "Precedence: command line > FAKESCOPE_<COMMAND>_<OPTION> "
                                                     "environment variables > this file > defaults."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr; no progress bars."),
          verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Also debug messages (where models come from, ...).")):
    configure_logging(quiet, verbose)
    if config is not None:  # read before the command's own context is made, which looks it up
        ctx.default_map = {**(ctx.default_map or {}), **read_config(config, ctx.command, ctx)}


@app.command(epilog="Exit status: 0 all images scored; 3 some failed; 4 none could be scored; 2 usage error. "
                     "Every option can also come from FAKESCOPE_SCAN_<OPTION> or the [scan] table of --config.",
             context_settings=env_settings("scan"))
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
    from .detector import load_detector
    from .images import ImageLimits
    from .scale.engines import EngineOptions
    from .scale.inputs import enumerate_inputs

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
            from .localize.evaluate import load_localizer
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
        from .scale.jobs import scan_job
        from .scale.outputs import JobMismatch, read_parts
        try:
            scan_job(inputs, out, model, opts, limits, batch_size or None, shard_size, log=log.info, abstain=uncertain,
                     threshold=threshold, score_options=score_options)
        except JobMismatch as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(EXIT_USAGE)
        results = read_parts(out).to_pylist()
    else:
        from functools import partial

        from .scale.jobs import scan_to_jsonl
        from .scale.maps import add_maps
        from .scale.outputs import ResultsFile, ResultsStream
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

    from .data.video import VideoLimits
    from .provenance import MODES

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


def parse_options(pairs: List[str]) -> dict:
    """--set KEY=VALUE pairs as head options; a malformed pair is a usage error."""
    from .training.options import parse_options as parse
    try:
        return parse(pairs)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None


@app.command()
def train(
    data: List[str] = typer.Option(..., "--data", help="Folder with real/ and fake/[generator]/, a .tar of that layout, or a CSV/JSONL manifest; repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder to write the detector to."),
    backbone: str = typer.Option("effnet-lite0", help="Backbone spec string (see `fakescope backbones`)."),
    method: Method = typer.Option("linear", help="Head to fit on the frozen features."),
    views: int = typer.Option(1, help="Views per training image: 1 clean + (views-1) augmented (crop, resize, JPEG)."),
    per_class: Optional[int] = typer.Option(None, help="Use at most this many images per class from each --data source."),
    val_fraction: float = typer.Option(0.15, help="Fraction of images held out for validation and the threshold."),
    target_fpr: float = typer.Option(0.05, help="Threshold: this fraction of held-out real images may be called fake."),
    calibrate_on: List[str] = typer.Option([], help="Set the threshold on held-out reals of these --data sources only."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default ~/.cache/fakescope/features)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    model_id: str = typer.Option("custom", "--id", help="Model id written into results."),
    version: str = typer.Option("1", "--model-version", help="Model version written into results."),
    text: Optional[str] = typer.Option(None, "--text", help="Caption encoder spec, e.g. minilm or hf-clip-text:<ref>."),
    modality: Modality = typer.Option("image", help="What the head reads (text/both need --text)."),
    options: List[str] = typer.Option([], "--set", help="Head option KEY=VALUE, e.g. --set alpha=0.9 --set sam=false; repeatable."),
    uncertain: bool = typer.Option(True, "--uncertain/--no-uncertain", help="Fit the rule that answers \"uncertain\" (saved in the model)."),
    uncertain_quantile: float = typer.Option(0.99, help="\"Uncertain\" rule: images farther from the training images than this quantile of the validation images are unfamiliar."),
    uncertain_miss_rate: float = typer.Option(0.05, help="\"Uncertain\" rule: \"real\" only below the score that this share of held-out fakes fall under."),
    uncertain_fpr: Optional[float] = typer.Option(None, help="\"Uncertain\" rule: \"fake\" only at or above the score this share of held-out reals reach (default: the threshold)."),
    seed: int = typer.Option(0),
):
    """Fit a detector on labelled images (frozen backbone + head). Methods: linear, multilayer, disentangle, robust-mlp,
    knn, ocsvm, distance; trained embeddings: code, natural-traces (options via --set, e.g. --set encoder=adapter
    --set head=ocsvm --set epochs=20; runs under torchrun too); and lowlevel, a CNN on generator traces (NPR residual of
    native-resolution crops) trained from scratch with a linear head on it (--set encoder=npr-tiny --set thumbnail=true
    for 32 px images)."""
    from .features import DEFAULT_CACHE
    from .train import TrainConfig, fit_detector
    from .uncertainty import UncertaintyConfig

    method, modality = value(method), value(modality)
    head_options = parse_options(options)
    if method in TRAINS_AN_ENCODER:  # checkpoints + metrics.jsonl inside the model folder
        head_options.setdefault("run_dir", str(out / "training"))
    cfg = TrainConfig(data=data, backbone=backbone, method=method, views=views, per_class=per_class,
                      val_fraction=val_fraction, target_fpr=target_fpr, calibrate_on=calibrate_on, seed=seed, model_id=model_id,
                      version=version, text_encoder=text, modality=modality, head_options=head_options,
                      uncertainty=UncertaintyConfig(quantile=uncertain_quantile, miss_rate=uncertain_miss_rate,
                                                    confident_fpr=uncertain_fpr) if uncertain else None,
                      cache=None if no_cache else str(cache or DEFAULT_CACHE))
    try:
        det = fit_detector(cfg, log=log.info)
    except ValueError as e:
        if method not in TRAINS_AN_ENCODER:
            raise
        err.print(f"[red]cannot train:[/red] {e}")  # unknown option, encoder or head: say so, no traceback
        raise typer.Exit(EXIT_USAGE)
    if det is None:  # torchrun: ranks other than 0 trained their share; rank 0 saves
        return
    det.save(out)
    if hasattr(det.head, "save_encoder"):  # the trained encoder on its own: backbone spec trained:<out>/encoder
        from dataclasses import asdict
        det.head.save_encoder(out / "encoder", asdict(det.spec), {"recipe": method})
    vm = det.metadata.get("validation_metrics")
    if vm:
        log.info(f"validation: AUC {vm['auc']:.4f}  AP {vm['ap']:.4f}  acc {vm['accuracy']:.4f} "
                  f"(real {vm['acc_real']:.4f}, fake {vm['acc_fake']:.4f}) at threshold {det.threshold:.4f}")
    log.info(f"saved {out}")


@app.command()
def compare(
    backbones_: List[str] = typer.Option([], "--backbone", help="Backbone spec to train on --data; repeat to compare several."),
    models: List[str] = typer.Option([], "--model", help="Existing detector folder ('default': the shipped one) to evaluate on --test; repeatable."),
    data: List[str] = typer.Option([], "--data", help="Training data for the --backbone runs (as for train); repeatable."),
    test: List[str] = typer.Option([], "--test", help="Labelled test data, evaluated at each model's threshold; repeatable."),
    method: Method = typer.Option("linear", help="The head trained on every backbone."),
    views: int = typer.Option(1, help="Views per training image (as for train)."),
    per_class: Optional[int] = typer.Option(None, help="At most this many images per class from each source."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default ~/.cache/fakescope/features)."),
    save: Optional[Path] = typer.Option(None, help="Also save each trained detector under this folder."),
    report: Optional[Path] = typer.Option(None, help="Write the table as JSON here."),
    seed: int = typer.Option(0),
):
    """One table: the same head trained on several backbones (which features expose fakes?),
    and/or existing detectors, all tested on the same --test data."""
    from .evaluation.compare import COLUMNS, compare_backbones, compare_detectors
    from .features import DEFAULT_CACHE
    from .train import TrainConfig

    method = value(method)
    if not backbones_ and not models:
        raise typer.BadParameter("give --backbone (with --data) and/or --model (with --test)")
    if backbones_ and not data:
        raise typer.BadParameter("--backbone runs need --data to train on", param_hint="--data")
    cfg = TrainConfig(data=data, method=method, views=views, per_class=per_class, seed=seed,
                      cache=str(cache or DEFAULT_CACHE))
    rows = compare_backbones(backbones_, cfg, test, save, log=log.info) if backbones_ else []
    rows += compare_detectors([None if ref == "default" else ref for ref in models], test, per_class, seed, cfg.cache)
    t = Table(title=f"{method} probe per backbone" if not models else "detectors compared", title_justify="left")
    t.add_column("backbone")
    t.add_column("dim", justify="right")
    t.add_column("set")
    for col in COLUMNS:
        t.add_column(col, justify="right")
    for r in rows:
        for name, m in [("validation", r["validation"])] + list(r["tests"].items()):
            t.add_row(r["backbone"], str(r["dim"]), Path(name).name, *(fmt(m.get(c)) for c in COLUMNS))
    Console().print(t)
    if report:
        report.write_text(json.dumps(rows, indent=2) + "\n")


@app.command("leave-out")
def leave_out(
    data: List[str] = typer.Option(..., "--data", help="Labelled data with fakes of several generators (fake/<generator>/); repeatable."),
    test_source: Optional[str] = typer.Option(None, "--test-source", help="The --data source whose generators are left out in turn and whose held-out images are tested (default: every source)."),
    backbone: str = typer.Option("effnet-lite0", help="Backbone spec string."),
    method: Method = typer.Option("linear", help="Head refitted without each generator."),
    options: List[str] = typer.Option([], "--set", help="Head option KEY=VALUE (as for train); repeatable."),
    views: int = typer.Option(1, help="Views per training image (as for train)."),
    per_class: Optional[int] = typer.Option(None, help="At most this many images per class from each source."),
    val_fraction: float = typer.Option(0.15, help="Fraction of images held out (hashed by file name, as in train): the test images."),
    target_fpr: float = typer.Option(0.05, help="Threshold: this share of the test source's held-out reals called fake."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default ~/.cache/fakescope/features)."),
    report: Optional[Path] = typer.Option(None, help="Write the per-generator results as JSON here."),
    seed: int = typer.Option(0),
):
    """Leave-one-generator-out: does a detector generalise to a generator it never saw? For each
    generator g: refit without any image of g, test the held-out reals vs the held-out images of g."""
    from .evaluation.protocols import leave_one_generator_out
    from .features import DEFAULT_CACHE
    from .train import TrainConfig, load_sources

    method = value(method)
    head_options = parse_options(options)
    if method in TRAINS_AN_ENCODER:  # no checkpoints kept for the refits
        head_options["run_dir"] = None
    if test_source is not None and test_source not in data:
        raise typer.BadParameter("must be one of the --data sources", param_hint="--test-source")
    cfg = TrainConfig(data=data, backbone=backbone, method=method, views=views, per_class=per_class, seed=seed,
                      val_fraction=val_fraction, target_fpr=target_fpr, head_options=head_options, uncertainty=None,
                      cache=str(cache or DEFAULT_CACHE))
    try:
        res = leave_one_generator_out(cfg, load_sources(data, per_class, seed), test_source, log=log.info)
    except ValueError as e:  # fewer than two named generators
        err.print(f"[red]cannot leave generators out:[/red] {one_line(e)}")
        raise typer.Exit(EXIT_USAGE)
    t = Table(title=f"{method} on {backbone}: trained without the generator of each row", title_justify="left")
    for col in ("left out", "n real", "n fake", "AUC", "AP", "acc", "TPR@5%FPR"):
        t.add_column(col, justify="left" if col == "left out" else "right")
    for g, m in res["per_generator"].items():
        t.add_row(one_line(g), str(m["n_real"]), str(m["n_fake"]), fmt(m["auc"]), fmt(m["ap"]), fmt(m["accuracy"]), fmt(m.get("tpr_at_5fpr")))
    t.add_row("mean", "", "", fmt(res["mean_auc"]), fmt(res["mean_ap"]), "", "")
    Console().print(t)
    if report:
        report.write_text(json.dumps(res, indent=2) + "\n")


@app.command()
def validate(
    source: List[str] = typer.Option(..., "--source", help="NAME=PATH of a labelled source held out in turn (real/ and fake/); repeatable."),
    photos: List[str] = typer.Option([], "--photos", help="NAME=PATH of real camera photos laid out real/<device>/<file>: always trained on, "
                                     "and held out by device for the false-positive rate; repeatable."),
    backbone: str = typer.Option("effnet-lite0", help="Backbone spec string."),
    method: Method = typer.Option("linear", help="Head refitted in every fold."),
    views: int = typer.Option(1, help="Views per training image (as for train)."),
    per_class: Optional[int] = typer.Option(None, help="At most this many images per class from each source."),
    target_fpr: float = typer.Option(0.05, help="Threshold rule: this share of the training sources' held-out reals called fake."),
    device_folds: int = typer.Option(5, help="Folds over camera devices for the false-positive rate."),
    uncertain_quantile: float = typer.Option(0.99, help="\"Uncertain\" rule: images farther from the training images than this quantile of the validation images are unfamiliar."),
    uncertain_miss_rate: float = typer.Option(0.05, help="\"Uncertain\" rule: \"real\" only below the score that this share of held-out fakes fall under."),
    uncertain_fpr: Optional[float] = typer.Option(None, help="\"Uncertain\" rule: \"fake\" only at or above the score this share of held-out reals reach (default: the threshold)."),
    options: List[str] = typer.Option([], "--set", help="Head option KEY=VALUE; repeatable."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default ~/.cache/fakescope/features)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    report: Optional[Path] = typer.Option(None, help="Write the results as JSON here (and a Markdown table beside it)."),
    seed: int = typer.Option(0),
):
    """Leave-one-source-out ROC-AUC and the false-positive rate on camera photos held out by
    device: validation that predicts how a recipe does on images unlike its training data."""
    from .evaluation.protocols import device_held_out_fpr, leave_one_source_out, load_named, markdown_table
    from .features import DEFAULT_CACHE
    from .train import TrainConfig

    method = value(method)
    from .uncertainty import UncertaintyConfig

    rule = UncertaintyConfig(quantile=uncertain_quantile, miss_rate=uncertain_miss_rate, confident_fpr=uncertain_fpr)
    head_options = parse_options(options)
    cfg = TrainConfig(data=[], backbone=backbone, method=method, views=views, per_class=per_class, seed=seed,
                      target_fpr=target_fpr, head_options=head_options, uncertainty=rule,
                      cache=None if no_cache else str(cache or DEFAULT_CACHE))
    sources, cameras = load_named(source, per_class, seed), load_named(photos, None, seed)
    loso = leave_one_source_out(cfg, sources, always_train=cameras, log=log.info)
    devices = device_held_out_fpr(cfg, cameras, sources, folds=device_folds, seed=seed, log=log.info) if cameras else None
    table = markdown_table(loso, devices)
    Console().print(table)
    if report:
        report.write_text(json.dumps({"backbone": backbone, "method": method, "views": views, "per_class": per_class,
                                      "target_fpr": target_fpr, "options": head_options,
                                      "uncertainty": rule.__dict__,
                                      "leave_one_source_out": loso, "device_held_out": devices}, indent=2) + "\n")
        report.with_suffix(".md").write_text(table + "\n")


@app.command("eval")
def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    data: List[str] = typer.Option(..., "--data", help="Labelled data (as for train); repeatable."),
    per_class: Optional[int] = typer.Option(None, help="At most this many images per class from each source."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for metrics.json and summary.md."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default: none)."),
    robustness: bool = typer.Option(False, "--robustness", help="Also score JPEG / blur / resize / crop / noise versions of every image (both classes alike)."),
    held_out: Optional[float] = typer.Option(None, "--held-out", help="Only the images that `train --val-fraction F "
                                             "--seed SEED` holds out (hashed by group: a file, or its family): a model's own validation split."),
    seed: int = typer.Option(0),
):
    """Measure a detector on labelled images: AP, ROC-AUC, accuracy at its threshold, per class and generator."""
    from .detector import load_detector
    from .evaluation.report import evaluate_detector

    det = load_detector(model)
    from .data.splits import split_samples
    from .train import load_sources
    samples = load_sources(data, per_class, seed)
    if held_out is not None:
        if not 0 < held_out < 1:
            raise typer.BadParameter("must be between 0 and 1", param_hint="--held-out")
        samples = [s for s, h in zip(samples, split_samples(samples, held_out, seed)) if h]
        log.info(f"{len(samples)} held-out images (--held-out {held_out}, seed {seed})")
        if not samples:
            raise typer.BadParameter("no image is held out at this fraction", param_hint="--held-out")
    from .evaluation.format_guard import check_formats
    guard = check_formats(samples)
    for w in guard:  # a shortcut between the classes makes every number below meaningless
        log.warning(f"[yellow]format guard:[/yellow] {one_line(w)}")
    metrics = evaluate_detector(det, samples, cache=str(cache) if cache else None)
    metrics["format_guard"] = guard
    if robustness:
        from .evaluation.robustness import robustness_grid
        metrics["robustness"] = robustness_grid(det, samples, seed=seed, log=log.info)
    t = Table(title=one_line(f"{det.name} on {', '.join(data)}"), title_justify="left")
    for col in ("subset", "n", "AUC", "AP", "acc", "acc real", "acc fake"):
        t.add_column(col, justify="right" if col != "subset" else "left")
    t.add_row("all", str(metrics["n"]), fmt(metrics["auc"]), fmt(metrics["ap"]), fmt(metrics["accuracy"]),
              fmt(metrics["acc_real"]), fmt(metrics["acc_fake"]))
    for g, m in metrics["per_generator"].items():
        t.add_row(one_line(f"real vs {g}"), str(m["n"]), fmt(m["auc"]), fmt(m["ap"]), fmt(m["accuracy"]), fmt(m["acc_real"]),
                  fmt(m["acc_fake"]))
    Console().print(t)
    if metrics.get("analysis"):  # disentangle: how much of the signal is semantic vs low-level
        a = Table(title="share of the detection signal (probes on each projection)", title_justify="left")
        for col in ("probe", "AUC", "acc"):
            a.add_column(col)
        for name, m in metrics["analysis"].items():
            if isinstance(m, dict):
                a.add_row(name, fmt(m.get("auc")), fmt(m.get("accuracy")))
        Console().print(a)
    if metrics["errors"]:
        log.warning(f"{len(metrics['errors'])} images could not be read (listed in metrics.json)")
    if metrics.get("robustness"):
        r = Table(title="robustness (both classes perturbed alike)", title_justify="left")
        for col in ("perturbation", "n", "AUC", "AP", "acc", "acc real", "acc fake"):
            r.add_column(col, justify="left" if col == "perturbation" else "right")
        for row in metrics["robustness"]:
            r.add_row(row["perturbation"], str(row["n"]), *(fmt(row[k]) for k in ("auc", "ap", "accuracy", "acc_real", "acc_fake")))
        Console().print(r)
    if report:
        from .evaluation.report import write_report
        write_report(report, metrics, data)
        log.info(f"wrote {report / 'metrics.json'}, {report / 'summary.md'} and {report / 'report.html'}")


@app.command()
def calibrate(
    data: List[str] = typer.Option(..., "--data", help="Labelled calibration images, not the ones you will report on; repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder for the calibrated detector."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    method: Calibration = typer.Option("platt", help="platt (a*logit+b), temperature (logit/T) or none (threshold only)."),
    target_fpr: Optional[float] = typer.Option(None, help="Also reset the threshold so this fraction of the real images is called fake."),
    per_class: Optional[int] = typer.Option(None, help="At most this many images per class from each source."),
    seed: int = typer.Option(0),
):
    """Calibrate a detector's scores (Platt or temperature scaling) and/or its threshold; writes a new detector."""
    from .detector import load_detector
    from .evaluation.calibrate import calibrate_detector
    from .train import load_sources

    base = load_detector(model)
    try:
        det = calibrate_detector(base, load_sources(data, per_class, seed), value(method), target_fpr, data=data)
    except ValueError as e:  # one class only, or no image could be read
        raise typer.BadParameter(str(e), param_hint="--data") from None
    det.save(out)
    report = det.metadata["calibration"]
    if report["before"]:
        log.info(f"ECE {report['before']['ece']:.4f} -> {report['after']['ece']:.4f}, "
                 f"Brier {report['before']['brier']:.4f} -> {report['after']['brier']:.4f} on {report['n']} images")
    log.info(f"threshold {base.threshold:.4f} -> {det.threshold:.4f}; saved {out}")


@app.command()
def backbones():
    """List the backbone spec names and prefixes this installation knows."""
    from .backbones import available, parse_spec

    for name in available():
        if name.endswith(":"):
            print(f"{name}<hub id or local dir>")
        else:
            s = parse_spec(name)
            print(f"{name:16s} dim={s.dim:<5d} input={s.input_size} weights={s.weights}")


@app.command()
def push(
    model_dir: Path = typer.Argument(..., help="A detector or localiser folder (detector.json / localizer.json + safetensors)."),
    repo_id: str = typer.Argument(..., help="Hugging Face Hub repo id, user/repo (created when missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to upload to (default: main)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", show_default=False,
                                        help="Hub token; default: HF_TOKEN or the `hf auth login` token."),
):
    """Upload a model folder to the Hugging Face Hub with its model card (README.md); then
    `--model user/repo` loads it anywhere."""
    from .hub import push_model

    url = push_model(model_dir, repo_id, revision=revision, private=private, token=token)
    log.info(f"pushed {one_line(model_dir)} to {one_line(repo_id)}: {one_line(url)}")


from .localize import commands as _loc  # noqa: E402

app.add_typer(_loc.app, name="localizer")
app.command("make-edits")(_loc.make_edits)
app.command("train-autoencoder")(_loc.train_autoencoder)

# --- commands from other modules: one registration line each, in its own slot ---
from .service.commands import serve as _serve  # noqa: E402
app.command("serve", context_settings=env_settings("serve"),
            epilog="Every option can also come from FAKESCOPE_SERVE_<OPTION> or the [serve] table of --config.")(_serve)
from .scale.commands import features as _features  # noqa: E402
app.command("features")(_features)
from .generate.commands import app as _build  # noqa: E402
app.add_typer(_build, name="build")


if __name__ == "__main__":
    sys.exit(app())
