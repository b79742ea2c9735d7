"""Score labelled samples with a Detector and summarise: overall and real-vs-each-generator; the
`fakescope eval --report` folder (metrics.json, summary.md, report.html)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.samples import Sample
from .fmt import fmt_metric
from .metrics import metrics_by_generator, summary


def evaluate_detector(det, samples: Sequence[Sample], cache=None, intervals: bool = True) -> dict:
    """Metrics of a detector on labelled samples; heads with an `analysis` (disentangle) add theirs.
    `intervals=False` skips the bootstrap intervals (callers that only need the scores).

    Goes through the feature extractor (the same decode/preprocess path as scanning), so a
    feature cache makes repeated evaluations cheap."""
    from ..features import FeatureCache, extract, head_input

    fc = FeatureCache(cache, det.spec) if cache else None
    rows, X, failed = extract(samples, det.backbone, fc, desc="eval features")
    ok = [samples[i] for i, _ in rows]
    T = None
    if det.needs_text:
        with_text = [j for j, s in enumerate(ok) if s.text is not None]
        failed += [(s.path, "missing_text: this model also reads a caption") for s in ok if s.text is None]
        ok, X = [ok[j] for j in with_text], X[with_text]
        T = det.encode_text([s.text for s in ok])
    labels = np.array([s.label for s in ok])
    # one pass of the head: the score and, for a fused head, each expert's (for validate --scores)
    raw, experts = det.head.predict_with_experts(head_input(X, T, det.modality)) if len(ok) else (np.zeros(0), None)
    scores = det.calibrated(raw) if len(ok) else raw
    metrics = summary(labels, scores, det.threshold) if len(ok) else {"n": 0}
    metrics["model"] = det.name
    metrics["per_generator"] = metrics_by_generator(labels, scores, [s.generator for s in ok], det.threshold)
    if det.uncertainty is not None and len(ok) and det.modality != "text":
        # selective classification: coverage, and accuracy / FPR on the images the rule answers
        from ..uncertainty import selective_metrics
        verdicts = det.verdicts(scores, X)
        metrics["selective"] = selective_metrics(labels, verdicts)
        # why each image was left unanswered (None: answered), and each verdict (a veto answers "real")
        metrics["_reasons"] = [r if label == "uncertain" else None for label, r in verdicts]
        metrics["_verdicts"] = [label for label, _ in verdicts]
    if len(ok):  # what answering only the most confident share would buy (selective classification)
        from ..uncertainty import risk_coverage
        metrics["risk_coverage"] = risk_coverage(labels, scores, det.threshold)
    analysis = det.head.analysis(X, labels) if len(set(labels)) == 2 else None
    if analysis is not None:  # e.g. disentangle: semantic vs low-level signal
        metrics["analysis"] = analysis
    metrics["errors"] = [{"path": path, "error": error} for path, error in failed]
    if len(set(labels)) == 2:
        from .calibration import brier, ece
        from .metrics import average_precision, bootstrap_ci, roc_auc
        metrics["ece"], metrics["brier"] = ece(labels, scores), brier(labels, scores)
    if len(set(labels)) == 2 and intervals:
        # 95% percentile intervals, resampling within each class (seeded: reports are reproducible)
        metrics["auc_ci95"] = list(bootstrap_ci(roc_auc, labels, scores, n=500))
        metrics["ap_ci95"] = list(bootstrap_ci(average_precision, labels, scores, n=500))
    metrics["_labels"], metrics["_scores"] = labels, scores  # for reports and calibration; not written to JSON
    metrics["_paths"] = [s.path for s in ok]
    if experts:  # a fused head's experts, each score beside the fused one
        metrics["_experts"] = experts
    metrics["_generators"] = [s.generator for s in ok]
    return metrics


def public(metrics: dict) -> dict:
    """The metrics without the per-image arrays (`_labels`, `_scores`, ...) that reports use."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def summary_markdown(m: dict, data: Sequence[str]) -> str:
    """The eval report as Markdown: overall, per generator, robustness, warnings."""
    keys = ("auc", "ap", "accuracy", "acc_real", "acc_fake", "tpr_at_1fpr", "tpr_at_5fpr", "eer", "best_accuracy")
    head = "| subset | n | AUC | AP | acc | acc real | acc fake | TPR@1%FPR | TPR@5%FPR | EER | oracle acc |"
    ci = ""
    if m.get("auc_ci95"):
        ci = (f" ROC-AUC 95% bootstrap interval {fmt_metric(m['auc_ci95'][0])}-{fmt_metric(m['auc_ci95'][1])}, "
              f"AP {fmt_metric(m['ap_ci95'][0])}-{fmt_metric(m['ap_ci95'][1])}; ECE {fmt_metric(m.get('ece'))}, Brier {fmt_metric(m.get('brier'))}.")
    lines = [f"# {m['model']} on {', '.join(data)}", "", f"Threshold {fmt_metric(m.get('threshold'))}.{ci}", "", head,
             "|" + "---|" * 11]
    rows = [("all", m)] + [(f"real vs {g}", v) for g, v in m.get("per_generator", {}).items()]
    for name, v in rows:
        lines.append(f"| {name} | {v.get('n', 0)} | " + " | ".join(fmt_metric(v.get(k)) for k in keys) + " |")
    rc = m.get("risk_coverage")
    if rc and rc["coverage"]:
        lines += ["", "## Selective classification: answering only the most confident images", "",
                  "| coverage | accuracy | false-positive rate |", "|---|---|---|"]
        for c, a, f in zip(rc["coverage"], rc["accuracy"], rc["fpr"]):
            if round(c * 20) in (10, 14, 18, 20):  # 50%, 70%, 90%, all
                lines.append(f"| {c:.2f} | {fmt_metric(a)} | {fmt_metric(f)} |")
        sel = m.get("selective")
        if sel:
            lines.append(f"\nThe model's \"uncertain\" rule answers {fmt_metric(sel['coverage'])} of these images, "
                         f"with accuracy {fmt_metric(sel['answered_accuracy'])} on them.")
    if m.get("robustness"):
        lines += ["", "## Robustness (both classes perturbed alike)", "",
                  "| perturbation | n | AUC | AP | acc | acc real | acc fake |", "|---|---|---|---|---|---|---|"]
        for r in m["robustness"]:
            lines.append(f"| {r['perturbation']} | {r['n']} | " +
                         " | ".join(fmt_metric(r[k]) for k in ("auc", "ap", "accuracy", "acc_real", "acc_fake")) + " |")
        from .html_report import auc_by_generator_table
        gens, by_gen = auc_by_generator_table(m["robustness"])
        if gens:
            lines += ["", "AUC per generator (all reals vs that generator's fakes):", "",
                      "| perturbation | " + " | ".join(gens) + " |", "|---|" + "---|" * len(gens)]
            lines += [f"| {name} | " + " | ".join(fmt_metric(a) for a in aucs) + " |" for name, aucs in by_gen]
    if m.get("format_guard"):
        lines += ["", "## Format guard warnings", ""] + [f"- {w}" for w in m["format_guard"]]
    if m.get("errors"):
        lines += ["", f"{len(m['errors'])} images could not be read (see metrics.json)."]
    return "\n".join(lines) + "\n"


def write_report(folder: str | Path, metrics: dict, data: Sequence[str], title: str | None = None) -> Path:
    """`fakescope eval --report`: metrics.json (without the per-image arrays), summary.md and
    report.html with its plots, from `evaluate_detector`'s metrics (robustness rows included)."""
    import json

    from .html_report import write_html_report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(public(metrics), indent=2) + "\n")
    (folder / "summary.md").write_text(summary_markdown(metrics, data))
    write_html_report(folder, public(metrics), metrics.get("_labels", []), metrics.get("_scores", []),
                      metrics.get("_generators"), title=title or f"{metrics['model']} on {', '.join(map(str, data))}")
    return folder
