"""Calibrate a saved detector on labelled images: refit its score map and/or its threshold.

The maths (Platt / temperature fitting, ECE, the map itself) is in `calibration.py`; this module
scores the images with the detector and returns the calibrated copy (`fakescope calibrate`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..data.samples import Sample
from .calibration import apply_calibration, calibration_quality, fit_calibration, invert_calibration
from .metrics import threshold_at_fpr
from .report import evaluate_detector


def calibrate_detector(det, samples: Sequence[Sample], method: str = "platt", target_fpr: float | None = None,
                       cache: str | None = None, data: Sequence[str] = ()):
    """A copy of `det` with a calibration map fitted on `samples` (`method`: platt, temperature,
    or none: threshold only) and its threshold carried through the map, which is monotone, so
    the verdicts stay the same (and the "uncertain" band's cuts with it); with `target_fpr`, the
    threshold is reset instead so that this share of the real images is called fake. Any
    calibration `det` had is replaced: the map is fitted on the head's raw scores, and the old
    cuts are carried back through the old map first. The report (before / after ECE, Brier, log
    loss) goes into `metadata["calibration"]`; `data` names the images there."""
    raw = replace(det, calibration=None)
    m = evaluate_detector(raw, samples, cache=cache, intervals=False)
    y, p = m["_labels"], m["_scores"]
    if not len(y):
        raise ValueError("no calibration image could be read")
    cal = fit_calibration(y, p, method)
    q = apply_calibration(p, cal)

    def remap(score: float) -> float:  # a cut on the old scale -> the same cut on the new one
        return float(apply_calibration(invert_calibration(np.array([score]), det.calibration), cal)[0])

    threshold = remap(det.threshold)
    if target_fpr is not None:
        if not (y == 0).any():
            raise ValueError("a target false-positive rate needs real images")
        threshold = threshold_at_fpr(q[y == 0], target_fpr)
    rule = det.uncertainty
    if rule is not None:  # the "near threshold" band's cuts move with the scores
        rule = replace(rule, low=min(remap(rule.low), threshold),
                       high=None if rule.high is None else max(remap(rule.high), threshold))
    report = {"data": list(map(str, data)), "method": method, "n": int(len(y)), "target_fpr": target_fpr,
              "before": calibration_quality(y, apply_calibration(p, det.calibration)), "after": calibration_quality(y, q)}
    return replace(det, calibration=cal, threshold=threshold, uncertainty=rule,
                   metadata={**det.metadata, "calibration": report})
