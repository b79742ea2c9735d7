"""`fakescope train`: fit a detector on labelled images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..clitools import value
from .common import (EXIT_USAGE, BackboneOption, CacheOption, MethodOption, Modality, NoCacheOption, PerClassOption,
                     SetOption, UncertainBandOption, UncertainFprOption, UncertainMissRateOption, UncertainQuantileOption,
                     ViewsOption, err, feature_cache, log, parse_options, uncertainty_rule)


def train(
    data: List[str] = typer.Option(..., "--data", help="Folder with real/ and fake/[generator]/, a .tar of that layout, or a CSV/JSONL manifest; repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder to write the detector to."),
    backbone: BackboneOption = "effnet-lite0",
    method: MethodOption = "linear",
    views: ViewsOption = 1,
    per_class: PerClassOption = None,
    val_fraction: float = typer.Option(0.15, help="Fraction of images held out for validation and the threshold."),
    target_fpr: float = typer.Option(0.05, help="Threshold: this fraction of held-out real images may be called fake."),
    calibrate_on: List[str] = typer.Option([], help="Set the threshold on held-out reals of these --data sources only."),
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
    model_id: str = typer.Option("custom", "--id", help="Model id written into results."),
    version: str = typer.Option("1", "--model-version", help="Model version written into results."),
    text: Optional[str] = typer.Option(None, "--text", help="Caption encoder spec, e.g. minilm or hf-clip-text:<ref>."),
    modality: Modality = typer.Option("image", help="What the head reads (text/both need --text)."),
    options: SetOption = [],
    uncertain: bool = typer.Option(True, "--uncertain/--no-uncertain", help="Fit the rule that answers \"uncertain\" (saved in the model)."),
    uncertain_quantile: UncertainQuantileOption = 0.99,
    uncertain_miss_rate: UncertainMissRateOption = 0.05,
    uncertain_fpr: UncertainFprOption = None,
    uncertain_band: UncertainBandOption = "validation",
    seed: int = typer.Option(0),
):
    """Fit a detector on labelled images (frozen backbone + head). Methods: linear, multilayer, disentangle, robust-mlp,
    knn, ocsvm, distance; trained embeddings: code, natural-traces (options via --set, e.g. --set encoder=adapter
    --set head=ocsvm --set epochs=20; runs under torchrun too); and lowlevel, a CNN on generator traces (NPR residual of
    native-resolution crops) trained from scratch with a linear head on it (--set encoder=npr-tiny --set thumbnail=true
    for 32 px images)."""
    from ..training.fit import TrainConfig, fit_detector, recipe

    method, modality = value(method), value(modality)
    own_recipe = recipe(method) is not None  # trains an encoder or experts (training/methods.py)
    head_options = parse_options(options)
    if own_recipe:  # checkpoints + metrics.jsonl inside the model folder
        head_options.setdefault("run_dir", str(out / "training"))
    cfg = TrainConfig(data=data, backbone=backbone, method=method, views=views, per_class=per_class,
                      val_fraction=val_fraction, target_fpr=target_fpr, calibrate_on=calibrate_on, seed=seed, model_id=model_id,
                      version=version, text_encoder=text, modality=modality, head_options=head_options,
                      uncertainty=(uncertainty_rule(uncertain_quantile, uncertain_miss_rate, uncertain_fpr, uncertain_band)
                                   if uncertain else None),
                      cache=feature_cache(cache, no_cache))
    try:
        det = fit_detector(cfg, log=log.info)
    except ValueError as e:  # unknown option, encoder or head, data that cannot make this model: say so, no traceback
        err.print(f"[red]cannot train:[/red] {e}")
        raise typer.Exit(EXIT_USAGE)
    if det is None:  # torchrun: ranks other than 0 trained their share; rank 0 saves
        return
    det.save(out)
    if det.head.trains_encoder:  # the trained encoder on its own: backbone spec trained:<out>/encoder
        from dataclasses import asdict
        det.head.save_encoder(out / "encoder", asdict(det.spec), {"recipe": method})
    vm = det.metadata.get("validation_metrics")
    if vm:
        log.info(f"validation: AUC {vm['auc']:.4f}  AP {vm['ap']:.4f}  acc {vm['accuracy']:.4f} "
                  f"(real {vm['acc_real']:.4f}, fake {vm['acc_fake']:.4f}) at threshold {det.threshold:.4f}")
    log.info(f"saved {out}")
