"""`fakescope train`: fit a detector on labelled images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..clitools import value
from .common import EXIT_USAGE, Method, Modality, TRAINS_AN_ENCODER, err, log, parse_options


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
    from ..features import DEFAULT_CACHE
    from ..train import TrainConfig, fit_detector
    from ..uncertainty import UncertaintyConfig

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
