"""Score labelled samples with a Detector and summarise: overall and real-vs-each-generator."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.samples import FAKE, REAL, Sample
from .metrics import summary


def metrics_by_generator(labels: np.ndarray, scores: np.ndarray, generators: Sequence[str | None],
                         threshold: float) -> dict:
    """Every real image against the fakes of one generator at a time."""
    gens = np.array([g or "unnamed" for g in generators], dtype=object)
    real = labels == REAL
    out = {}
    for g in sorted(set(gens[labels == FAKE])):
        m = real | ((labels == FAKE) & (gens == g))
        out[g] = summary(labels[m], scores[m], threshold)
    return out


def evaluate_detector(det, samples: Sequence[Sample]) -> dict:
    results = [r for batch in det.iter_predict(samples) for r in batch]
    ok = [(s, r) for s, r in zip(samples, results) if r.error is None]
    labels = np.array([s.label for s, _ in ok])
    scores = np.array([r.score for _, r in ok])
    metrics = summary(labels, scores, det.threshold) if len(ok) else {"n": 0}
    metrics["model"] = det.name
    metrics["per_generator"] = metrics_by_generator(labels, scores, [s.generator for s, _ in ok], det.threshold)
    metrics["errors"] = [{"path": r.path, "error": r.error} for r in results if r.error is not None]
    return metrics
