"""Pixel-level localisation metrics as pure functions of (pred, mask), plus a constant-memory accumulator.

Inputs
------
``pred``: a map of manipulation probabilities in [0, 1] (any float dtype, usually (H, W)).
``mask``: the ground truth of the same shape, bool or numeric with values in {0, 1}
(1 / True = manipulated pixel = positive). Masks stored as 0/255 PNGs or soft masks must be
binarised by the caller; anything else raises ``ValueError``, as do a shape mismatch, NaNs and
predictions outside [0, 1].

Conventions (as in the image-forensics / DeCLIP literature)
----------------------------------------------------------
* A pixel is predicted manipulated when ``pred >= threshold`` (inclusive, as in ``metrics.py``).
* Localisation metrics are computed per manipulated image and averaged over images
  (IoU@0.5, F1@0.5, best-F1); pixel AP / ROC-AUC of the accumulator are dataset-level
  (all pixels of all manipulated images pooled).
* Empty sets: ``iou`` and ``f1`` of an empty prediction against an empty mask are 1.0 (perfect
  agreement; scikit-learn's ``zero_division=1.0``); a non-empty prediction against an empty mask
  scores 0.0. ``best_f1`` of an empty mask is therefore 1.0 (the oracle threshold predicts
  nothing). On manipulated images the mask is never empty, so these cases only matter for
  degenerate data; the accumulator excludes fake images with empty masks from the per-image
  means and counts them separately.
* ``pixel_auc`` is NaN when the mask is all one class; ``pixel_ap`` is NaN when the mask has no
  positive pixel (precision-recall undefined) and 1.0 when every pixel is positive.
* No "inverted map" trick: some papers report max(F1(pred), F1(1 - pred)); we do not.
"""
from __future__ import annotations

import numpy as np

from fakescope.evaluation.metrics import _curve, average_precision, roc_auc

__all__ = ["pixel_scores", "iou", "f1", "best_f1", "pixel_ap", "pixel_auc", "map_scores", "top_mean", "PixelMetrics"]


def _as_pred(pred) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    if np.isnan(p).any():
        raise ValueError("pred contains NaN")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"pred must lie in [0, 1], got [{p.min():.4g}, {p.max():.4g}]")
    return p


def _as_mask(mask) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    if not np.isin(m, (0, 1)).all():
        raise ValueError("mask must be bool or contain only 0 and 1 (binarise 0/255 or soft masks first)")
    return m.astype(bool)


def _check_pair(pred, mask) -> tuple[np.ndarray, np.ndarray]:
    p, m = _as_pred(pred), _as_mask(mask)
    if p.shape != m.shape:
        raise ValueError(f"pred shape {p.shape} != mask shape {m.shape}")
    return p.ravel(), m.ravel()


def pixel_scores(pred, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validated, flattened (labels, scores): int labels in {0, 1} and float64 scores, ready for
    the image-level functions of ``fakescope.evaluation.metrics``."""
    p, m = _check_pair(pred, mask)
    return m.astype(int), p


def _confusion(p: np.ndarray, m: np.ndarray, threshold: float) -> tuple[int, int, int]:
    b = p >= threshold
    tp = int(np.count_nonzero(b & m))
    fp = int(np.count_nonzero(b)) - tp
    fn = int(np.count_nonzero(m)) - tp
    return tp, fp, fn


def iou(pred, mask, threshold: float = 0.5) -> float:
    """Jaccard index |P & M| / |P | M| of the binarised map; 1.0 if both are empty."""
    tp, fp, fn = _confusion(*_check_pair(pred, mask), threshold)
    den = tp + fp + fn
    return tp / den if den else 1.0


def f1(pred, mask, threshold: float = 0.5) -> float:
    """Pixel F1 = 2|P & M| / (|P| + |M|) of the binarised map; 1.0 if both are empty."""
    tp, fp, fn = _confusion(*_check_pair(pred, mask), threshold)
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else 1.0


def best_f1(pred, mask) -> float:
    """Max pixel F1 over every threshold for this image (oracle per-image threshold, the
    "best-F1" of CAT-Net / TruFor tables). The candidates are ``pred >= t`` for every distinct
    value t of the map plus the empty prediction (F1 0, or 1 if the mask is empty)."""
    p, m = _check_pair(pred, mask)
    n_pos = int(np.count_nonzero(m))
    if n_pos == 0 or p.size == 0:
        return 1.0
    tps, fps, _ = _curve(m.astype(np.int64), p)
    return float(np.max(2.0 * tps / (tps + fps + n_pos)))


def pixel_ap(pred, mask) -> float:
    """Average precision of the pixel scores (scikit-learn's step-wise definition)."""
    return average_precision(*pixel_scores(pred, mask))


def pixel_auc(pred, mask) -> float:
    """Pixel ROC-AUC (ties count 1/2); NaN when the mask is all one class."""
    return roc_auc(*pixel_scores(pred, mask))


def _box_mean(p: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Means over all fully-inside kh x kw windows (no padding), via a summed-area table."""
    s = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    s[1:, 1:] = p.cumsum(0).cumsum(1)
    return (s[kh:, kw:] - s[:-kh, kw:] - s[kh:, :-kw] + s[:-kh, :-kw]) / (kh * kw)


def map_scores(pred, pool: int = 3) -> dict[str, float]:
    """Image-level scores from a 2-D map: ``mean`` = mean of the map; ``max`` = max of the
    ``pool x pool`` average-pooled map (windows fully inside the image, stride 1, no padding).

    The pooled max is used rather than the raw max because one isolated hot pixel (noise,
    a JPEG block edge) would otherwise decide the image score; a region must cover about a
    window to reach a high score, and a lone pixel of 1.0 scores only 1/9. Maps smaller than
    the window in a dimension are pooled over that whole dimension; ``pool=1`` is the raw max.
    """
    p = _as_pred(pred)
    if p.ndim != 2:
        raise ValueError(f"map_scores expects a 2-D map, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("empty map")
    pooled = _box_mean(p, min(pool, p.shape[0]), min(pool, p.shape[1]))
    return {"mean": float(p.mean()), "max": float(pooled.max())}


def top_mean(pred, fraction: float) -> float:
    """Mean of the highest ``fraction`` of a map's values (at least one pixel): an image-level
    "was this edited" score that needs a region of about that size to be high, unlike the max."""
    p = _as_pred(pred).ravel()
    if p.size == 0:
        raise ValueError("empty map")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * p.size)))
    return float(np.partition(p, p.size - k)[p.size - k:].mean())


class PixelMetrics:
    """Streaming localisation metrics whose memory does not grow with the number of pixels.

    Per update it keeps the map's two image-level scores (``map_scores``), the label, and for
    manipulated images three per-image scalars; pixels only enter two fixed histograms.

    Binning: ``n_bins`` thresholds ``t_k = linspace(0, 1, n_bins)`` (default 1001, step 0.001,
    as torchmetrics' binned curves); a pixel with score p falls in bin k = max{k : t_k <= p},
    so ``p >= t_k`` holds exactly when its bin is >= k. The binned pixel AP / AUC are therefore
    the *exact* AP / AUC of the scores rounded down to the grid. Rounding only merges scores
    inside one bin, so the AUC error is at most half the fraction of (positive, negative) pixel
    pairs sharing a bin, reported as ``pixel_auc_max_error`` (~ bin width x score density for
    smooth score distributions). Maps quantised to 8 bits (levels k/255, 1/255 > 0.001) are
    scored exactly, as each level has its own bin. AP has the same behaviour (exact for
    quantised maps, O(bin width) for smooth ones) without a cheap closed-form bound.

    ``compute()`` keys:
      counts: ``n_images``, ``n_real``, ``n_fake``, ``n_fake_empty_mask`` (fakes whose mask is
        empty: in the pixel histograms and image AUC, but not in the per-image means),
        ``n_pixels_pos``, ``n_pixels_neg`` (manipulated images only);
      per-image means over manipulated images with a non-empty mask: ``iou`` and ``f1`` at
        ``threshold`` (exact), ``best_f1`` (oracle threshold among the grid thresholds, so
        <= the exact ``best_f1`` and within about one bin of it);
      one threshold for all images: ``best_fixed_threshold``, the grid threshold with the highest
        mean per-image F1 on these images, and that F1, ``f1_best_fixed`` (exact for grid
        thresholds; an oracle on the data it is computed on: calibrate on one set, report on
        another; ``fixed_threshold_f1()`` and ``real_pixel_fpr_curve()`` give the curves,
        ``best_fixed_threshold(max_real_fpr)`` the best one that flags at most that share of
        real pixels);
      dataset-level, pixels of manipulated images pooled: ``pixel_ap``, ``pixel_auc``,
        ``pixel_auc_max_error``;
      ``real_pixel_fpr``: fraction of real-image pixels with ``pred >= threshold`` (pooled);
      image level, real vs manipulated: ``image_auc_mean`` and ``image_auc_max`` (ROC-AUC of
        the ``map_scores`` "mean" / "max"; NaN unless both classes were seen);
      and ``threshold``, ``n_bins``.
    Empty-set values are NaN (no manipulated image -> NaN means, etc.).
    """

    def __init__(self, n_bins: int = 1001, threshold: float = 0.5, pool: int = 3):
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        self.n_bins, self.threshold, self.pool = int(n_bins), float(threshold), int(pool)
        self.thresholds = np.linspace(0.0, 1.0, self.n_bins)
        self.hist_pos = np.zeros(self.n_bins, dtype=np.int64)
        self.hist_neg = np.zeros(self.n_bins, dtype=np.int64)
        self.real_pixels = 0
        self.real_flagged = 0
        self.n_fake_empty_mask = 0
        self.labels: list[int] = []
        self.score_mean: list[float] = []
        self.score_max: list[float] = []
        self.ious: list[float] = []
        self.f1s: list[float] = []
        self.best_f1s: list[float] = []
        self.f1_by_threshold = np.zeros(self.n_bins)  # sum over images of F1 at every grid threshold
        self.hist_real = np.zeros(self.n_bins, dtype=np.int64)  # pixels of real images, by bin

    def _bins(self, p: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.thresholds, p, side="right") - 1

    def update(self, pred, mask=None, is_fake: bool = True) -> None:
        """Add one image. ``mask`` may be None for a real image (then all-negative); a real
        image whose mask has manipulated pixels raises ``ValueError``."""
        p = _as_pred(pred)
        if mask is None:
            if is_fake:
                raise ValueError("a manipulated image needs a mask")
            m = np.zeros(p.shape, dtype=bool)
        else:
            m = _as_mask(mask)
            if p.shape != m.shape:
                raise ValueError(f"pred shape {p.shape} != mask shape {m.shape}")
        sc = map_scores(p, self.pool)  # validates 2-D before any state changes
        p, m = p.ravel(), m.ravel()
        n_pos = int(np.count_nonzero(m))
        if not is_fake:
            if n_pos:
                raise ValueError("a real image cannot have manipulated pixels in its mask")
            self.real_pixels += p.size
            self.real_flagged += int(np.count_nonzero(p >= self.threshold))
            self.hist_real += np.bincount(self._bins(p), minlength=self.n_bins)
        else:
            k = self._bins(p)
            hp = np.bincount(k[m], minlength=self.n_bins)
            hn = np.bincount(k[~m], minlength=self.n_bins)
            self.hist_pos += hp
            self.hist_neg += hn
            if n_pos == 0:
                self.n_fake_empty_mask += 1
            else:
                tp, fp, fn = _confusion(p, m, self.threshold)
                self.ious.append(tp / (tp + fp + fn))
                self.f1s.append(2 * tp / (2 * tp + fp + fn))
                tps, fps = np.cumsum(hp[::-1])[::-1], np.cumsum(hn[::-1])[::-1]  # pixels >= t_k, per k
                f1_k = 2.0 * tps / (tps + fps + n_pos)
                self.best_f1s.append(float(f1_k.max()))
                self.f1_by_threshold += f1_k
        self.labels.append(int(bool(is_fake)))
        self.score_mean.append(sc["mean"])
        self.score_max.append(sc["max"])

    def _binned_ap_auc(self) -> tuple[float, float, float]:
        pos, neg = self.hist_pos.astype(np.float64), self.hist_neg.astype(np.float64)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0:
            ap = float("nan")
        else:
            tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)  # empty prefix: recall step 0
            ap = float(np.sum(np.diff(np.r_[0.0, tp / n_pos]) * precision))
        if n_pos == 0 or n_neg == 0:
            return ap, float("nan"), float("nan")
        above = np.cumsum(pos[::-1])[::-1] - pos  # positives in strictly higher bins
        auc = float(np.sum(neg * (above + 0.5 * pos)) / (n_pos * n_neg))
        err = float(0.5 * np.sum(pos * neg) / (n_pos * n_neg))
        return ap, auc, err

    def fixed_threshold_f1(self) -> tuple[np.ndarray, np.ndarray]:
        """(grid thresholds, mean per-image F1 when every manipulated image is cut at that threshold)."""
        n = len(self.f1s)
        return self.thresholds.copy(), (self.f1_by_threshold / n if n else np.full(self.n_bins, np.nan))

    def real_pixel_fpr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(grid thresholds, fraction of real-image pixels with pred >= threshold), pooled."""
        if not self.real_pixels:
            return self.thresholds.copy(), np.full(self.n_bins, np.nan)
        return self.thresholds.copy(), np.cumsum(self.hist_real[::-1])[::-1] / self.real_pixels

    def best_fixed_threshold(self, max_real_fpr: float | None = None) -> tuple[float, float, float]:
        """(threshold, mean F1 there, real-pixel FPR there): the grid threshold with the best mean
        per-image F1 on the manipulated images, among those that flag at most `max_real_fpr` of the
        real images' pixels (None: no limit). NaNs when no threshold qualifies."""
        ts, curve = self.fixed_threshold_f1()
        _, fpr = self.real_pixel_fpr_curve()
        ok = np.ones(self.n_bins, bool) if max_real_fpr is None else (fpr <= max_real_fpr)
        if not self.f1s or not ok.any():
            return float("nan"), float("nan"), float("nan")
        k = int(np.argmax(np.where(ok, curve, -np.inf)))  # the lowest threshold among equals
        return float(ts[k]), float(curve[k]), float(fpr[k])

    def compute(self) -> dict[str, float]:
        def mean(xs):
            return float(np.mean(xs)) if xs else float("nan")

        ap, auc, err = self._binned_ap_auc()
        t_best, f1_best, _ = self.best_fixed_threshold()
        y = np.asarray(self.labels, dtype=int)
        return {
            "n_images": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int(y.sum()),
            "n_fake_empty_mask": int(self.n_fake_empty_mask),
            "n_pixels_pos": int(self.hist_pos.sum()), "n_pixels_neg": int(self.hist_neg.sum()),
            "iou": mean(self.ious), "f1": mean(self.f1s), "best_f1": mean(self.best_f1s),
            "best_fixed_threshold": t_best, "f1_best_fixed": f1_best,
            "pixel_ap": ap, "pixel_auc": auc, "pixel_auc_max_error": err,
            "real_pixel_fpr": self.real_flagged / self.real_pixels if self.real_pixels else float("nan"),
            "image_auc_mean": roc_auc(y, self.score_mean) if len(y) else float("nan"),
            "image_auc_max": roc_auc(y, self.score_max) if len(y) else float("nan"),
            "threshold": self.threshold, "n_bins": self.n_bins,
        }
