"""`fakescope localizer train|eval|calibrate`: the commands over Localizer and the pair loader
(the pairs' builders, `make-edits` and `train-autoencoder`, are cli/edits.py)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..evaluation.fmt import fmt_metric as fmt

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Localise edits: train and evaluate localisers (DeCLIP-style decoders on frozen patch features).")
err = Console(stderr=True)
log = logging.getLogger(__name__)  # shown by the CLI at its --quiet/--verbose level
DEFAULT_BACKBONE = "vit-s14-focus?resize=resize&patch_layer=8"
METRICS = ("iou", "f1", "best_f1", "pixel_ap", "pixel_auc", "image_auc_mean", "image_auc_max")


def _localizer_and_pairs(model: Optional[str], cache: Optional[Path], data: List[str], val_fraction: float, seed: int):
    """The localiser (with its grid cache) and the pairs to score: the held-out ones when
    val_fraction > 0 (the split train made), else all."""
    from ..data.pairs import load_split_pairs
    from .evaluate import load_localizer
    loc = load_localizer(model)
    loc.cache_dir = cache
    tr, va = load_split_pairs(data, val_fraction, seed)
    return loc, (va if val_fraction > 0 else tr)


def _print_metrics(title: str, m: dict) -> None:
    t = Table(title=title, title_justify="left")
    for col in ("n real", "n edited") + METRICS:
        t.add_column(col, justify="right")
    t.add_row(str(m.get("n_real", 0)), str(m.get("n_fake", 0)), *(fmt(m.get(k)) for k in METRICS))
    Console().print(t)


@app.command()
def train(
    data: List[str] = typer.Option(..., "--data", help="Folder or .tar with real/, fake/, mask/ and table.csv (CocoGlide layout, or `make-edits` output); repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder to write the localiser to."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="Backbone spec giving patch features (see ?patch_layer=)."),
    second_backbone: Optional[str] = typer.Option(None, help="Optional second backbone whose grid is concatenated (as DeCLIP adds a ResNet-50)."),
    width: int = typer.Option(256, help="Channels of the first decoder stage (halved per stage)."),
    stages: Optional[int] = typer.Option(None, help="Upsampling stages (default: enough to reach half the input size)."),
    decoder: str = typer.Option("fakescope", help="Decoder preset: fakescope (one Conv3x3 per stage) or declip-conv20 (DeCLIP's best: 4 stages of 5 Conv5x5, widths 512-64; --width/--stages unused)."),
    solver: str = typer.Option("adamw", help="adamw (gradient steps) or ridge (a linear decoder in closed form; use --stages 0)."),
    ridge_lambda: float = typer.Option(100.0, help="--solver ridge: the penalty (per 1000, on standardised features)."),
    read: str = typer.Option("whole", help="whole (the image as the backbone spec reads it) or tiles (native-resolution windows, maps averaged)."),
    tile_stride: int = typer.Option(112, help="--read tiles: pixels between windows."),
    target_size: Optional[int] = typer.Option(None, help="Train on masks shrunk to this side (cheaper); maps stay full size."),
    epochs: int = typer.Option(20),
    lr: float = typer.Option(1e-3),
    balanced: bool = typer.Option(False, help="Weigh edited and untouched pixels equally in the loss."),
    val_fraction: float = typer.Option(0.2, help="Fraction of pairs (a real photo and its edit together) held out."),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Keep backbone patch grids here: a re-fit on the same images skips the backbone (and validation reuses them)."),
):
    """Fit a localiser on (image, mask) pairs; reports pixel metrics on the held-out pairs."""
    from ..data.pairs import load_split_pairs
    from .evaluate import evaluate_localizer
    from .localizer import Localizer, LocalizerConfig

    tr, va = load_split_pairs(data, val_fraction, seed)
    log.info(f"{len(tr)} training and {len(va)} validation images ({sum(p.label for p in tr)} / "
              f"{sum(p.label for p in va)} edited)")
    cfg = LocalizerConfig(backbone=backbone, second_backbone=second_backbone, width=width, stages=stages,
                          decoder=decoder, epochs=epochs, lr=lr, balanced=balanced, seed=seed, solver=solver,
                          ridge_lambda=ridge_lambda, read=read, tile_stride=tile_stride, target_size=target_size)
    loc = Localizer(cfg, cache_dir=cache)
    loc.fit([(p.image, p.mask) for p in tr], [(p.image, p.mask) for p in va] or None, log=log.info)
    if va:
        m = evaluate_localizer(loc, va)
        loc.metadata["validation_metrics"] = {k: v for k, v in m.items() if k != "errors"}
        _print_metrics("validation (held-out pairs)", m)
    loc.metadata.update({"data": list(data), "val_fraction": val_fraction, "split": "by pair (table row), hashed, seed %d" % seed})
    loc.save(out)
    log.info(f"saved {out}")


@app.command("eval")
def evaluate(
    data: List[str] = typer.Option(..., "--data", help="Pairs (as for train); repeatable."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Localiser folder; default: the shipped one."),
    val_fraction: float = typer.Option(0.0, help="Evaluate only the pairs this fraction holds out (as in train); 0: all pairs."),
    seed: int = typer.Option(0),
    report: Optional[Path] = typer.Option(None, help="Write metrics.json, examples.png (image / truth / prediction) and report.html here."),
    examples: int = typer.Option(8, help="Edited images shown in the report's overlay grid."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Backbone patch-grid cache (as for train)."),
):
    """Pixel metrics on edited images (IoU, F1, best-F1, pixel AP/AUC) and image AUC of map scores."""
    from .evaluate import evaluate_localizer, write_localizer_report

    loc, pairs = _localizer_and_pairs(model, cache, data, val_fraction, seed)
    m = evaluate_localizer(loc, pairs)
    _print_metrics(f"localiser on {', '.join(data)}" + (" (held-out pairs)" if val_fraction > 0 else "")
                   + f"; IoU and F1 at its threshold {loc.threshold:.3f}", m)
    log.info(f"one threshold for all images, best on these pairs: {m['best_fixed_threshold']:.3f} "
              f"(mean F1 {fmt(m['f1_best_fixed'])}; an oracle here, see `fakescope localizer calibrate`)")
    if m["errors"]:
        log.warning(f"{len(m['errors'])} images could not be used (listed in metrics.json)")
    if report:
        write_localizer_report(loc, pairs, m, report, examples)


@app.command()
def calibrate(
    data: List[str] = typer.Option(..., "--data", help="Pairs to choose the threshold on (as for train); repeatable. "
                                   "Use pairs the localiser was not trained on, and report on others."),
    out: Path = typer.Option(..., "--out", help="Folder to write the calibrated localiser to (may be --model's own)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Localiser folder; default: the shipped one."),
    val_fraction: float = typer.Option(0.0, help="Use only the pairs this fraction holds out (as in train); 0: all pairs."),
    seed: int = typer.Option(0),
    max_real_fpr: Optional[float] = typer.Option(None, help="Only thresholds that flag at most this share of the "
                                                 "real images' pixels (e.g. 0.05); default: no limit."),
    recenter: bool = typer.Option(False, "--recenter", help="Fold the threshold into the decoder: map >= 0.5 is then "
                                  "the cut (the written mask's grey 128), as in the shipped localiser."),
    image_fraction: Optional[float] = typer.Option(None, help="Also set the image rule that makes a verdict \"fake\": "
                                                   "mean of the map's top FRACTION of pixels (the shipped one: 0.005)..."),
    image_max_fpr: float = typer.Option(0.05, help="...against the lowest threshold flagging at most this share of the real images."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Backbone patch-grid cache (as for train)."),
):
    """Set the mask threshold (map >= t is "edited") to the one with the best mean F1 on these pairs
    (optionally folded into the decoder, and the image rule from their real images)."""
    from .evaluate import calibrate_localizer

    loc, pairs = _localizer_and_pairs(model, cache, data, val_fraction, seed)
    try:
        rec = calibrate_localizer(loc, pairs, max_real_fpr,
                                  {"data": list(data), "val_fraction": val_fraction, "seed": seed},
                                  recenter=recenter, image_fraction=image_fraction, image_max_fpr=image_max_fpr)
    except ValueError as e:
        err.print(f"{e}; nothing saved")
        raise typer.Exit(2)
    loc.cache_dir = None
    loc.save(out)
    log.info(f"threshold {rec['previous_threshold']:.3f} -> {rec['threshold']:.3f}"
             + (" (folded into the decoder: 0.5 now)" if recenter else "") + f" on these {rec['n_edited']} edited / "
             f"{rec['n_real']} real images: mean F1 {fmt(rec['f1_at_previous'])} -> {fmt(rec['f1_at_threshold'])}, "
             f"real pixels flagged {fmt(rec['real_pixel_fpr_at_previous'])} -> {fmt(rec['real_pixel_fpr_at_threshold'])} "
             f"(chosen on them: report on other pairs); saved {out}")
