"""One verdict from two pieces of evidence: the detector's P(fake) and the localiser's edit map.

A photo inpainted in one region often keeps a low P(fake) (most of its pixels are real) while its
map shows the region with confidence. Where the localiser has an image rule (`Localizer.image_rule`,
chosen on validation pairs: the mean of the map's top share of pixels against a threshold that
flags few pristine photos), a map over that threshold turns a "real" or "uncertain" verdict into
"fake" with the reason saying so. A "fake" verdict is never turned back: the map only adds evidence.
`scan --localize`, the Python records and the service answer all use this one rule.
"""
from __future__ import annotations

import numpy as np


def edit_evidence(loc, prob_map: np.ndarray) -> dict:
    """{"edit_score": s, "edit_threshold": t, "edited": s >= t} under the localiser's image rule,
    or {} when it has none."""
    scorer = getattr(loc, "edit_score", None)  # a map source without an image rule adds no evidence
    score = scorer(prob_map) if scorer is not None else None
    if score is None:
        return {}
    if min(np.shape(prob_map)[:2]) < float(loc.image_rule.get("min_side", 0)):
        # smaller than the images the rule was measured on (upscaled thumbnails flag real photos): a map, no verdict
        return {"edit_score": score, "edit_threshold": None, "edited": None}
    t = float(loc.image_rule["threshold"])
    return {"edit_score": score, "edit_threshold": t, "edited": bool(score >= t)}


def combine(label: str | None, reason: str | None, evidence: dict) -> tuple[str | None, str | None]:
    """The verdict after the map's evidence: (label, reason)."""
    if not evidence.get("edited") or label not in ("real", "uncertain"):
        return label, reason
    return "fake", (f"edit map: an edited region (edit score {evidence['edit_score']:.2f} >= "
                    f"{evidence['edit_threshold']:.2f}) although P(fake) is low")


def apply(loc, record: dict, prob_map: np.ndarray) -> None:
    """Add the edit evidence to a scan record / service answer and update its label and reason."""
    ev = edit_evidence(loc, prob_map)
    if not ev:
        return
    record.update(ev)
    record["label"], record["reason"] = combine(record.get("label"), record.get("reason"), ev)
