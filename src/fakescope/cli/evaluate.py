"""`fakescope eval`, `calibrate`, `compare`, `leave-out` and `validate`: measure and calibrate detectors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..clitools import value
from ..evaluation.fmt import fmt_metric as fmt
from .common import (EXIT_USAGE, MODEL_HELP, BackboneOption, CacheOption, Calibration, MethodOption, NoCacheOption,
                     PerClassOption, SetOption, UncertainBandOption, UncertainFprOption, UncertainMissRateOption,
                     UncertainQuantileOption, ViewsOption, err, feature_cache, log, one_line, parse_options, uncertainty_rule)


def compare(
    backbones_: List[str] = typer.Option([], "--backbone", help="Backbone spec to train on --data; repeat to compare several."),
    models: List[str] = typer.Option([], "--model", help="Existing detector folder ('default': the shipped one) to evaluate on --test; repeatable."),
    data: List[str] = typer.Option([], "--data", help="Training data for the --backbone runs (as for train); repeatable."),
    test: List[str] = typer.Option([], "--test", help="Labelled test data, evaluated at each model's threshold; repeatable."),
    method: MethodOption = "linear",
    views: ViewsOption = 1,
    per_class: PerClassOption = None,
    cache: CacheOption = None,
    save: Optional[Path] = typer.Option(None, help="Also save each trained detector under this folder."),
    report: Optional[Path] = typer.Option(None, help="Write the table as JSON here."),
    seed: int = typer.Option(0),
):
    """One table: the same head trained on several backbones (which features expose fakes?),
    and/or existing detectors, all tested on the same --test data."""
    from ..evaluation.compare import COLUMNS, compare_backbones, compare_detectors
    from ..training.fit import TrainConfig

    method = value(method)
    if not backbones_ and not models:
        raise typer.BadParameter("give --backbone (with --data) and/or --model (with --test)")
    if backbones_ and not data:
        raise typer.BadParameter("--backbone runs need --data to train on", param_hint="--data")
    cfg = TrainConfig(data=data, method=method, views=views, per_class=per_class, seed=seed, cache=feature_cache(cache))
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


def leave_out(
    data: List[str] = typer.Option(..., "--data", help="Labelled data with fakes of several generators (fake/<generator>/); repeatable."),
    test_source: Optional[str] = typer.Option(None, "--test-source", help="The --data source whose generators are left out in turn and whose held-out images are tested (default: every source)."),
    backbone: BackboneOption = "effnet-lite0",
    method: MethodOption = "linear",
    options: SetOption = [],
    views: ViewsOption = 1,
    per_class: PerClassOption = None,
    val_fraction: float = typer.Option(0.15, help="Fraction of images held out (hashed by file name, as in train): the test images."),
    target_fpr: float = typer.Option(0.05, help="Threshold: this share of the test source's held-out reals called fake."),
    cache: CacheOption = None,
    report: Optional[Path] = typer.Option(None, help="Write the per-generator results as JSON here."),
    seed: int = typer.Option(0),
):
    """Leave-one-generator-out: does a detector generalise to a generator it never saw? For each
    generator g: refit without any image of g, test the held-out reals vs the held-out images of g."""
    from ..evaluation.protocols import leave_one_generator_out
    from ..training.fit import TrainConfig, load_sources, recipe

    method = value(method)
    head_options = parse_options(options)
    if recipe(method) is not None:  # a recipe that trains an encoder: no checkpoints kept for the refits
        head_options["run_dir"] = None
    if test_source is not None and test_source not in data:
        raise typer.BadParameter("must be one of the --data sources", param_hint="--test-source")
    cfg = TrainConfig(data=data, backbone=backbone, method=method, views=views, per_class=per_class, seed=seed,
                      val_fraction=val_fraction, target_fpr=target_fpr, head_options=head_options, uncertainty=None,
                      cache=feature_cache(cache))
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


def validate(
    source: List[str] = typer.Option(..., "--source", help="NAME=PATH of a labelled source held out in turn (real/ and fake/); repeatable."),
    photos: List[str] = typer.Option([], "--photos", help="NAME=PATH of real camera photos laid out real/<device>/<file>: always trained on, "
                                     "and held out by device for the false-positive rate; repeatable."),
    backbone: BackboneOption = "effnet-lite0",
    method: MethodOption = "linear",
    views: ViewsOption = 1,
    per_class: PerClassOption = None,
    target_fpr: float = typer.Option(0.05, help="Threshold rule: this share of the training sources' held-out reals called fake."),
    device_folds: int = typer.Option(5, help="Folds over camera devices for the false-positive rate."),
    uncertain_quantile: UncertainQuantileOption = 0.99,
    uncertain_miss_rate: UncertainMissRateOption = 0.05,
    uncertain_fpr: UncertainFprOption = None,
    uncertain_band: UncertainBandOption = "validation",
    options: SetOption = [],
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
    report: Optional[Path] = typer.Option(None, help="Write the results as JSON here (and a Markdown table beside it)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Write every fold's per-image results here (.npz, keys "
                                          "'<fold>/<name>'): paths, labels, scores, \"uncertain\" reasons, threshold, "
                                          "band and the out-of-source scores it was cut from."),
    seed: int = typer.Option(0),
):
    """Leave-one-source-out ROC-AUC and the false-positive rate on camera photos held out by
    device: validation that predicts how a recipe does on images unlike its training data."""
    from ..evaluation.protocols import device_held_out_fpr, leave_one_source_out, load_named, markdown_table, save_fold_arrays
    from ..training.fit import TrainConfig

    method = value(method)
    rule = uncertainty_rule(uncertain_quantile, uncertain_miss_rate, uncertain_fpr, uncertain_band)
    head_options = parse_options(options)
    cfg = TrainConfig(data=[], backbone=backbone, method=method, views=views, per_class=per_class, seed=seed,
                      target_fpr=target_fpr, head_options=head_options, uncertainty=rule, cache=feature_cache(cache, no_cache))
    sources, cameras = load_named(source, per_class, seed), load_named(photos, None, seed)
    per_image: dict | None = {} if scores else None
    loso = leave_one_source_out(cfg, sources, always_train=cameras, log=log.info, per_image=per_image)
    devices = device_held_out_fpr(cfg, cameras, sources, folds=device_folds, seed=seed, log=log.info,
                                  per_image=per_image) if cameras else None
    table = markdown_table(loso, devices)
    Console().print(table)
    if report:
        report.write_text(json.dumps({"backbone": backbone, "method": method, "views": views, "per_class": per_class,
                                      "target_fpr": target_fpr, "options": head_options,
                                      "uncertainty": rule.__dict__,
                                      "leave_one_source_out": loso, "device_held_out": devices}, indent=2) + "\n")
        report.with_suffix(".md").write_text(table + "\n")
    if scores:
        save_fold_arrays(scores, per_image)


def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    data: List[str] = typer.Option(..., "--data", help="Labelled data (as for train); repeatable."),
    per_class: PerClassOption = None,
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for metrics.json and summary.md."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default: none)."),
    robustness: bool = typer.Option(False, "--robustness", help="Also score JPEG / blur / resize / crop / noise versions of every image (both classes alike)."),
    held_out: Optional[float] = typer.Option(None, "--held-out", help="Only the images that `train --val-fraction F "
                                             "--seed SEED` holds out (hashed by group: a file, or its family): a model's own validation split."),
    seed: int = typer.Option(0),
):
    """Measure a detector on labelled images: AP, ROC-AUC, accuracy at its threshold, per class and generator."""
    from ..detector import load_detector
    from ..evaluation.report import evaluate_detector

    det = load_detector(model)
    from ..data.splits import split_samples
    from ..training.fit import load_sources
    samples = load_sources(data, per_class, seed)
    if held_out is not None:
        if not 0 < held_out < 1:
            raise typer.BadParameter("must be between 0 and 1", param_hint="--held-out")
        samples = [s for s, h in zip(samples, split_samples(samples, held_out, seed)) if h]
        log.info(f"{len(samples)} held-out images (--held-out {held_out}, seed {seed})")
        if not samples:
            raise typer.BadParameter("no image is held out at this fraction", param_hint="--held-out")
    from ..evaluation.format_guard import check_formats
    guard = check_formats(samples)
    for w in guard:  # a shortcut between the classes makes every number below meaningless
        log.warning(f"[yellow]format guard:[/yellow] {one_line(w)}")
    metrics = evaluate_detector(det, samples, cache=str(cache) if cache else None)
    metrics["format_guard"] = guard
    if robustness:
        from ..evaluation.robustness import robustness_grid
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
        from ..evaluation.report import write_report
        write_report(report, metrics, data)
        log.info(f"wrote {report / 'metrics.json'}, {report / 'summary.md'} and {report / 'report.html'}")


def calibrate(
    data: List[str] = typer.Option(..., "--data", help="Labelled calibration images, not the ones you will report on; repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder for the calibrated detector."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    method: Calibration = typer.Option("platt", help="platt (a*logit+b), temperature (logit/T) or none (threshold only)."),
    target_fpr: Optional[float] = typer.Option(None, help="Also reset the threshold so this fraction of the real images is called fake."),
    per_class: PerClassOption = None,
    seed: int = typer.Option(0),
):
    """Calibrate a detector's scores (Platt or temperature scaling) and/or its threshold; writes a new detector."""
    from ..detector import load_detector
    from ..evaluation.calibrate import calibrate_detector
    from ..training.fit import load_sources

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
