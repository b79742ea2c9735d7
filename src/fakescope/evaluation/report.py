"""Score labelled samples with a Detector and summarise: overall and real-vs-each-generator."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.samples import Sample
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
    scores = det.head_scores(head_input(X, T, det.modality)) if len(ok) else np.zeros(0)
    metrics = summary(labels, scores, det.threshold) if len(ok) else {"n": 0}
    metrics["model"] = det.name
    metrics["per_generator"] = metrics_by_generator(labels, scores, [s.generator for s in ok], det.threshold)
    if det.uncertainty is not None and len(ok) and det.modality != "text":
        # selective classification: coverage, and accuracy / FPR on the images the rule answers
        from ..uncertainty import selective_metrics
        metrics["selective"] = selective_metrics(labels, scores, det.threshold, [r for _, r in det.verdicts(scores, X)])
    if hasattr(det.head, "analysis") and len(set(labels)) == 2:
        metrics["analysis"] = det.head.analysis(X, labels)
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
    metrics["_generators"] = [s.generator for s in ok]
    return metrics


def public(metrics: dict) -> dict:
    """The metrics without the per-image arrays (`_labels`, `_scores`, ...) that reports use."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}
