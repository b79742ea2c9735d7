"""When a detector should not answer: the "uncertain" verdict and its reason.

A detector's score is only meaningful on images like those it was validated on. Two rules,
both fitted on the training run's own data and saved in the model folder as arrays:

  unfamiliar     the image's features are far from every training image's: the mean cosine
                 distance to its k nearest training images (a stored, seeded subsample) is above
                 the `quantile` of the same distance over the held-out validation images. Camera
                 photos, screenshots or art unlike anything trained on land here instead of
                 getting a confident verdict the detector cannot back.
  near threshold the score lies between `low` and `high`: `low` is the score under which at
                 most `miss_rate` of the held-out fakes fall, so "real" is said only below it;
                 `high` is the score at or above which at most `confident_fpr` of the held-out
                 reals fall (never below the detector's threshold), so "fake" is said only there.
                 With the rule off, the threshold alone decides (its stated false-positive rate).
                 Where the cuts come from (`band`): "validation" reads them off the held-out split of
                 the training sources, where a detector is at its best; "sources" and "per-source"
                 read them off out-of-source scores (each training source scored by a head fitted
                 without it), which is how a source never seen behaves. "sources" pools them, each
                 source weighing the same, so the one source a detector cannot read (CIFAKE's
                 thumbnails) owns both tails; "per-source" cuts each source at the rates and takes
                 the mean of the cuts: the band of a typical unseen source (docs/results.md 11.7).

A fused detector with a referee expert adds a third reason, "experts disagree" (heads/fusion.py
`disagreements`; detector.py applies it after "unfamiliar" and before "near threshold"). A referee
with a veto turns the most confident of those objections into an answer: "real", with the reason
REFEREE_VETO (heads/fusion.py `vetoes`).

Measured as selective classification (accuracy and false-positive rate on the answered images
against coverage) by `fakescope validate`; `--no-uncertain` (or `Detector.abstain = False`)
turns it off.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNFAMILIAR = "unfamiliar: unlike the images this detector was trained and validated on"
NEAR_THRESHOLD = "near threshold: the score is between the confident-real and confident-fake cuts"
# a fused detector's referee (heads/fusion.py) gives the other verdict at its own cut
EXPERTS_DISAGREE = "experts disagree: a second expert, reading other evidence, gives the other verdict"
# ... and is so sure the image is real that it overrules the voters' "fake" (a referee's veto): the
# verdict is "real", with this reason, where the rule is on
REFEREE_VETO = "referee: a second expert, reading other evidence, is confident the image is real"


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(queries: np.ndarray, reference: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Mean cosine distance from each query to its k nearest reference rows (rows pre-normalised)."""
    q = _normalise(queries)
    k = max(1, min(k, len(reference)))
    out = np.empty(len(q), np.float32)
    for start in range(0, len(q), chunk):
        sim = q[start:start + chunk] @ reference.T
        top = np.partition(-sim, k - 1, axis=1)[:, :k]
        out[start:start + chunk] = 1.0 + top.mean(axis=1)  # 1 - mean similarity
    return out


def familiar_part(features: np.ndarray, columns: int | None) -> np.ndarray:
    """The columns familiarity is measured on: the first `columns`, or all."""
    return features[:, :columns] if columns else features


@dataclass
class UncertaintyRule:
    reference: np.ndarray      # (M, D) L2-normalised features of training images (float32)
    k: int                     # neighbours averaged
    max_distance: float        # above it: unfamiliar
    low: float                 # below it: real; [low, high): near threshold
    quantile: float            # of the validation distances that set max_distance
    miss_rate: float           # share of held-out fakes allowed under `low`
    high: float | None = None  # at or above it: fake; None: the detector's threshold
    confident_fpr: float | None = None  # share of held-out reals allowed at or above `high`
    band: str = "validation"   # where low / high were read: the validation split or out-of-source scores
    columns: int | None = None  # familiarity read on the first `columns` feature columns only; None: all
    # (labels, scores, sources) the band was cut from when it came from out-of-source scores; kept in
    # memory for the protocols that report it (fakescope validate --scores), never saved
    out_of_source: tuple | None = field(default=None, repr=False, compare=False)

    def cuts(self, threshold: float) -> tuple[float, float]:
        """(low, high) as applied at `threshold`: "near threshold" is low <= score < high."""
        return float(self.low), float(threshold if self.high is None else max(self.high, threshold))

    def reasons(self, features: np.ndarray, scores: np.ndarray, threshold: float) -> list[str | None]:
        """One reason per image to answer "uncertain", or None to answer."""
        features = familiar_part(np.asarray(features), self.columns)
        dist = knn_distance(features, self.reference, self.k) if len(features) else np.zeros(0)
        out: list[str | None] = []
        _, high = self.cuts(threshold)
        for d, s in zip(dist, scores):
            if d > self.max_distance:
                out.append(UNFAMILIAR)
            elif self.low <= s < high:
                out.append(NEAR_THRESHOLD)
            else:
                out.append(None)
        return out

    def config(self) -> dict:
        return {"k": self.k, "max_distance": self.max_distance, "low": self.low, "high": self.high,
                "quantile": self.quantile, "miss_rate": self.miss_rate, "confident_fpr": self.confident_fpr,
                "band": self.band, "reference_rows": int(len(self.reference)), "columns": self.columns}

    def state(self) -> dict[str, np.ndarray]:
        return {"reference": self.reference.astype(np.float16)}  # half the bytes; distances change < 1e-3

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "UncertaintyRule":
        ref = np.asarray(state["reference"], np.float32)
        if ref.ndim != 2 or not len(ref):
            raise ValueError("uncertainty reference must be a non-empty matrix")
        values = {k: float(config[k]) for k in ("max_distance", "low", "quantile", "miss_rate")}
        values.update({k: float(config[k]) for k in ("high", "confident_fpr") if config.get(k) is not None})
        if not all(np.isfinite(v) for v in values.values()):
            raise ValueError("uncertainty rule has a non-finite value")
        columns = None if config.get("columns") is None else int(config["columns"])
        if columns is not None and columns != ref.shape[1]:
            raise ValueError(f"uncertainty reference has {ref.shape[1]} columns, its config says {columns}")
        return cls(reference=_normalise(ref), k=int(config["k"]), band=str(config.get("band", "validation")),
                   columns=columns, **values)


BANDS = ("validation", "sources", "per-source")


@dataclass(frozen=True)
class UncertaintyConfig:
    """How the rule is fitted (chosen by leave-one-source-out validation, docs/results.md)."""
    k: int = 10                  # neighbours averaged for the distance
    quantile: float = 0.99       # validation distances under the unfamiliar cut
    miss_rate: float = 0.05      # held-out fakes allowed under the confident-real cut
    confident_fpr: float | None = None   # held-out reals allowed over the confident-fake cut; None: the threshold
    max_reference: int = 4096    # training rows kept for the distance
    band: str = "validation"     # where low/high come from: "validation", or out-of-source scores "sources" / "per-source"

    def __post_init__(self):
        if self.band not in BANDS:
            raise ValueError(f"uncertainty band must be one of {', '.join(map(repr, BANDS))}, not {self.band!r}")

    @property
    def from_sources(self) -> bool:
        """The band is read off out-of-source scores (a training run needs two or more sources)."""
        return self.band != "validation"


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `values` where each value counts `weights` times (lower interpolation)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, np.float64)[order], np.asarray(weights, np.float64)[order]
    cum = np.cumsum(w) / w.sum()
    return float(v[min(int(np.searchsorted(cum, q, side="left")), len(v) - 1)])


def per_source_cuts(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, threshold: float,
                    miss_rate: float, confident_fpr: float) -> tuple[list[float], list[float]]:
    """Each source's own cuts at the rates, never across the threshold: the miss-rate quantile of
    its fakes (sources with fakes) and the (1 - confident_fpr) quantile of its reals (sources with reals)."""
    y, s, src, t = np.asarray(labels), np.asarray(scores, np.float64), np.asarray(sources), float(threshold)
    lows = [min(float(np.quantile(s[(src == n) & (y == 1)], miss_rate)), t) for n in np.unique(src[y == 1])]
    highs = [max(float(np.quantile(s[(src == n) & (y == 0)], 1.0 - confident_fpr)), t) for n in np.unique(src[y == 0])]
    return lows, highs


def source_band(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, threshold: float,
                miss_rate: float, confident_fpr: float, per_source: bool = False) -> tuple[float, float]:
    """(low, high) from out-of-source scores, every source weighing the same within its class:
    at most `miss_rate` of their fakes under low, at most `confident_fpr` of their reals at or above high.
    `per_source`: each source's own cuts at those rates (never across the threshold), averaged; a
    source with one class only sets that class's side."""
    if per_source:
        lows, highs = per_source_cuts(labels, scores, sources, threshold, miss_rate, confident_fpr)
        t = float(threshold)
        return (float(np.mean(lows)) if lows else t), (float(np.mean(highs)) if highs else t)
    y, s, src = np.asarray(labels), np.asarray(scores, np.float64), np.asarray(sources)

    def per_source_weights(mask):  # 1 / (images of its source): each source sums to one
        _, inverse, counts = np.unique(src[mask], return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse]

    low, high = float(threshold), float(threshold)
    if (y == 1).any():
        low = min(weighted_quantile(s[y == 1], per_source_weights(y == 1), miss_rate), float(threshold))
    if (y == 0).any():
        high = max(weighted_quantile(s[y == 0], per_source_weights(y == 0), 1.0 - confident_fpr), float(threshold))
    return low, high


def fit_uncertainty(train_x: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, val_scores: np.ndarray,
                    threshold: float, cfg: UncertaintyConfig = UncertaintyConfig(), seed: int = 0,
                    out_of_source: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    columns: int | None = None) -> UncertaintyRule:
    """Fit both rules on one training run: reference rows from the training features, the distance
    cut from the held-out validation images, the band from them too or (band "sources") from
    `out_of_source` = (labels, scores, source names) of images scored by heads that never saw their source.
    `columns`: familiarity on the first that many feature columns only (e.g. a backbone's final
    embedding when its intermediate blocks follow: they say how an image was made, not what it shows,
    and would multiply the stored reference's size)."""
    from .evaluation.metrics import threshold_at_fpr

    train_x, val_x = familiar_part(train_x, columns), familiar_part(val_x, columns)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(train_x)) if len(train_x) <= cfg.max_reference else \
        np.sort(rng.choice(len(train_x), cfg.max_reference, replace=False))
    reference = _normalise(train_x[rows]).astype(np.float16).astype(np.float32)  # as it will be loaded
    max_distance = float(np.quantile(knn_distance(val_x, reference, cfg.k), cfg.quantile)) if len(val_x) else 1.0
    if cfg.from_sources:
        if out_of_source is None:
            raise ValueError(f"uncertainty band {cfg.band!r} needs out-of-source scores (two or more training sources)")
        fpr = cfg.miss_rate if cfg.confident_fpr is None else cfg.confident_fpr
        low, high = source_band(*out_of_source, threshold, cfg.miss_rate, fpr, per_source=cfg.band == "per-source")
    else:
        y, s = np.asarray(val_y), np.asarray(val_scores)
        fakes, reals = s[y == 1], s[y == 0]
        low = float(min(np.quantile(fakes, cfg.miss_rate), threshold)) if len(fakes) else float(threshold)
        high = None
        if cfg.confident_fpr is not None and len(reals):
            high = max(threshold_at_fpr(reals, cfg.confident_fpr), float(threshold))
    return UncertaintyRule(reference=reference, k=cfg.k, max_distance=max_distance, low=low, high=high,
                           quantile=cfg.quantile, miss_rate=cfg.miss_rate, confident_fpr=cfg.confident_fpr,
                           band=cfg.band, columns=columns or None,
                           out_of_source=out_of_source if cfg.from_sources else None)


def selective_metrics(labels: np.ndarray, verdicts: list[tuple[str, str | None]]) -> dict:
    """Coverage (share answered: not "uncertain") and, on the answered images, accuracy and
    false-positive rate of the verdicts (a vetoed "fake" is an answer: "real")."""
    y = np.asarray(labels)
    said = np.array([label for label, _ in verdicts], dtype=object)
    reasons = [reason for _, reason in verdicts]
    answered = said != "uncertain"
    pred = said == "fake"
    out = {"coverage": float(answered.mean()) if len(y) else float("nan"),
           "unfamiliar": float(np.mean([r == UNFAMILIAR for r in reasons])) if len(y) else float("nan"),
           "disagree": float(np.mean([r == EXPERTS_DISAGREE for r in reasons])) if len(y) else float("nan"),
           "vetoed": float(np.mean([r == REFEREE_VETO for r in reasons])) if len(y) else float("nan")}
    a = answered
    out["answered_accuracy"] = float((pred[a] == (y[a] == 1)).mean()) if a.any() else float("nan")
    reals = a & (y == 0)
    out["answered_fpr"] = float(pred[reals].mean()) if reals.any() else float("nan")
    fakes = a & (y == 1)
    out["answered_tpr"] = float(pred[fakes].mean()) if fakes.any() else float("nan")
    return out


def risk_coverage(labels: np.ndarray, scores: np.ndarray, threshold: float, steps: int = 20) -> dict:
    """The risk-coverage curve of answering only the images whose score is farthest from the
    threshold (in logit units): at coverage c = k/20, the ceil(c n) most confident images are
    answered; accuracy on them and the false-positive rate on their reals. Ties in confidence are
    broken by input order, so the curve is a function of the inputs."""
    y = np.asarray(labels).astype(int)
    s = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
    t = float(np.clip(threshold, 1e-7, 1 - 1e-7))
    confidence = np.abs(np.log(s / (1 - s)) - np.log(t / (1 - t)))
    order = np.argsort(-confidence, kind="stable")
    correct = ((s >= t) == (y == 1))[order]
    false_pos = ((s >= t) & (y == 0))[order]
    is_real = (y == 0)[order]
    out = {"coverage": [], "accuracy": [], "fpr": []}
    for k in range(1, steps + 1):
        m = int(np.ceil(k / steps * len(y)))
        if m == 0:
            continue
        reals = int(is_real[:m].sum())
        out["coverage"].append(m / len(y))
        out["accuracy"].append(float(correct[:m].mean()))
        out["fpr"].append(float(false_pos[:m].sum() / reals) if reals else float("nan"))
    return out


__all__ = ["BANDS", "EXPERTS_DISAGREE", "NEAR_THRESHOLD", "REFEREE_VETO", "UNFAMILIAR", "UncertaintyConfig", "UncertaintyRule", "fit_uncertainty", "knn_distance",
           "per_source_cuts", "risk_coverage", "selective_metrics", "source_band", "weighted_quantile"]
