"""What every command module shares: exit codes, help texts, the console and logging, the choice
Enums (listed here so a --help never imports torch), the options several commands take (declared
once; each command gives the default), and small option parsers."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console

from ..clitools import choice

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 2, 3, 4

DEFAULT_HELP = """\
With no --model, the shipped default detector is used (runs offline): a linear probe on frozen CLIP
ViT-B/16 features (its embedding and the class tokens of blocks 6, 8, 10, 12) for every image,
fused with a small pixel CNN that speaks only for thumbnails (96 px or less). Trained on CIFAKE
thumbnails, ImageNet and COCO photos, 335 camera photos from ~170 devices, and images from older
generators, Stable Diffusion 1.x and photoreal DALL-E 3 / SDXL / Stable Cascade people. Chosen by
leave-one-source-out validation: 0.963-0.984 ROC-AUC on a photo source held out of training (0.725
on CIFAKE thumbnails), 0.991 on CIFAKE val, 1.2% of camera photos from unseen devices called fake
at its threshold (5% of held-out reals). It answers "uncertain" (with a reason) on images unlike its
training data or between cuts read off how unseen sources score (--no-uncertain turns that off).
Weak spots: thumbnails from sources it never saw, photoreal people from new generators, heavy
re-compression, and local edits (inpainting), which it misses at image level (use --localize). The
previous EfficientNet default: --model effnet-v2. Numbers: docs/results.md sections 9 and 11.6-11.7."""
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
# the heads' and the training recipes' names, listed here because asking the registries imports torch
# on every --help; tests/test_cli_conventions.py fails when this list and the registries differ
Method = choice("Method", ["linear", "multilayer", "disentangle", "robust-mlp", "code", "natural-traces", "knn",
                           "ocsvm", "ocsvm-poly", "distance", "lowlevel", "fusion"])
Modality = choice("Modality", ["image", "text", "both"])
Calibration = choice("Calibration", ["platt", "temperature", "none"])


# options of train, compare, leave-out and validate (cli/train.py, cli/evaluate.py)
BackboneOption = Annotated[str, typer.Option(help="Backbone spec string (see `fakescope backbones`).")]
MethodOption = Annotated[Method, typer.Option(help="A head fitted on the frozen features, or a training recipe "
                                                   "(code, natural-traces, lowlevel, fusion; see `fakescope train --help`).")]
ViewsOption = Annotated[int, typer.Option(help="Views per training image: 1 clean + (views-1) augmented (crop, resize, JPEG).")]
PerClassOption = Annotated[Optional[int], typer.Option(help="Use at most this many images per class from each source.")]
CacheOption = Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/fakescope/features).")]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
SetOption = Annotated[List[str], typer.Option("--set", help="Method option KEY=VALUE, e.g. --set alpha=0.9 --set sam=false; "
                                                            "repeatable.")]
UncertainQuantileOption = Annotated[float, typer.Option(
    help="\"Uncertain\" rule: images farther from the training images than this quantile of the validation images are unfamiliar.")]
UncertainMissRateOption = Annotated[float, typer.Option(
    help="\"Uncertain\" rule: \"real\" only below the score that this share of held-out fakes fall under.")]
UncertainFprOption = Annotated[Optional[float], typer.Option(
    help="\"Uncertain\" rule: \"fake\" only at or above the score this share of held-out reals reach (default: the threshold).")]
UncertainBandOption = Annotated[str, typer.Option(
    help="\"Uncertain\" rule: where its cuts come from: 'validation' (held-out split of the training sources) or "
         "'sources' (each training source scored by a head fitted without it: how a new source behaves; pooled) or "
         "'per-source' (the same scores cut source by source, the cuts averaged: a typical new source).")]


def feature_cache(cache: Optional[Path], no_cache: bool = False) -> str | None:
    """--cache / --no-cache as TrainConfig.cache: the folder, the default one, or None (no cache)."""
    from ..features import DEFAULT_CACHE
    return None if no_cache else str(cache or DEFAULT_CACHE)


def uncertainty_rule(quantile: float, miss_rate: float, confident_fpr: Optional[float], band: str = "validation"):
    """The --uncertain-* options as the rule training fits (uncertainty.py)."""
    from ..uncertainty import UncertaintyConfig
    try:
        return UncertaintyConfig(quantile=quantile, miss_rate=miss_rate, confident_fpr=confident_fpr, band=band)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--uncertain-band") from None


def one_line(text: object) -> str:
    """Text from data (file names, messages quoting them) as one printable, markup-free line."""
    from rich.markup import escape
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text).replace("\n", " "))
    return escape(s)


def parse_options(pairs: List[str]) -> dict:
    """--set KEY=VALUE pairs as head options; a malformed pair is a usage error."""
    from ..data.augment import AugmentConfig
    from ..training.options import parse_options as parse
    try:
        options = parse(pairs)
        AugmentConfig.from_options({k: v for k, v in options.items() if k.startswith("augment.")})  # names checked
        return options
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None

