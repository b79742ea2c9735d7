"""Tiny PNG plots drawn with Pillow only (no matplotlib): ROC, PR, histograms, reliability, robustness.

Every function writes a ``SIZE`` PNG (white background, axes with ticks and labels, a title and a
legend when there are several series) and returns its path. Non-finite values are skipped: a NaN
breaks a line into pieces instead of crashing the plot.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .calibration import ece, reliability_bins
from .metrics import average_precision, roc_auc, roc_curve

SIZE = (480, 360)
PLOT_BOX = (58, 28, 466, 312)  # (left, top, right, bottom) of the axes area, in pixels
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127)]
GRID = (232, 232, 232)
GUIDE = (150, 150, 150)  # chance / identity lines (not a series colour)
MAX_LEGEND = 8

_FONT = None


def _font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default()
    return _FONT


def color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def _text_size(draw: ImageDraw.ImageDraw, text: str) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    return right - left, bottom - top


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float) -> str:
    """The text, cut with an ellipsis until it fits in ``width`` pixels."""
    if _text_size(draw, text)[0] <= width:
        return text
    while len(text) > 1 and _text_size(draw, text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while start + k * step <= hi + step * 1e-9:
        ticks.append(round(start + k * step, 10))
        k += 1
    return ticks


def _fmt_tick(v: float) -> str:
    s = f"{round(v, 10):g}"
    return "0" if s == "-0" else s


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    n = min(len(x), len(y))
    return x[:n], y[:n]


class _Canvas:
    """Axes on a white image; data goes on a layer clipped to the axes box, the legend on top."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim=(0.0, 1.0), ylim=(0.0, 1.0),
                 xticks: Sequence[tuple[float, str]] | None = None):
        self.xlim = tuple(float(v) for v in xlim)
        self.ylim = tuple(float(v) for v in ylim)
        if not self.xlim[1] > self.xlim[0]:
            self.xlim = (self.xlim[0] - 0.5, self.xlim[0] + 0.5)
        if not self.ylim[1] > self.ylim[0]:
            self.ylim = (self.ylim[0] - 0.5, self.ylim[0] + 0.5)
        self.img = Image.new("RGB", SIZE, "white")
        self.layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self.ldraw = ImageDraw.Draw(self.layer)
        self.legend_entries: list[tuple[str, tuple[int, int, int]]] = []
        self._axes(title, xlabel, ylabel, xticks)

    # coordinates -----------------------------------------------------------------------------
    def px(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = PLOT_BOX
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        # keep far-away points finite for PIL; the clipping mask hides what lies outside the box
        fx, fy = min(max(fx, -10.0), 11.0), min(max(fy, -10.0), 11.0)
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    # axes ------------------------------------------------------------------------------------
    def _axes(self, title, xlabel, ylabel, xticks):
        d, (x0, y0, x1, y1) = self.draw, PLOT_BOX
        xt = list(xticks) if xticks is not None else [(v, _fmt_tick(v)) for v in nice_ticks(*self.xlim)]
        yt = [(v, _fmt_tick(v)) for v in nice_ticks(*self.ylim)]
        for v, _ in xt:
            px = self.px(v, self.ylim[0])[0]
            d.line([(px, y0), (px, y1)], fill=GRID)
        for v, _ in yt:
            py = self.px(self.xlim[0], v)[1]
            d.line([(x0, py), (x1, py)], fill=GRID)
        d.rectangle([x0, y0, x1, y1], outline="black")
        # x tick labels: staggered on two rows when they would overlap
        slot = (x1 - x0) / max(1, len(xt))
        stagger = xticks is not None and any(_text_size(d, s)[0] > slot - 4 for _, s in xt)
        for i, (v, s) in enumerate(xt):
            px = self.px(v, self.ylim[0])[0]
            d.line([(px, y1), (px, y1 + 4)], fill="black")
            if stagger:
                s = _fit(d, s, 2 * slot - 4)
            w, h = _text_size(d, s)
            row = (i % 2) * 12 if stagger else 0
            d.text((px - w / 2, y1 + 6 + row), s, fill="black", font=_font())
        for v, s in yt:
            py = self.px(self.xlim[0], v)[1]
            d.line([(x0 - 4, py), (x0, py)], fill="black")
            w, h = _text_size(d, s)
            d.text((x0 - 6 - w, py - h / 2 - 2), s, fill="black", font=_font())
        if title:
            t = _fit(d, title, SIZE[0] - 8)
            w, _ = _text_size(d, t)
            d.text(((SIZE[0] - w) / 2, 8), t, fill="black", font=_font())
        if xlabel:
            t = _fit(d, xlabel, x1 - x0)
            w, _ = _text_size(d, t)
            d.text(((x0 + x1 - w) / 2, SIZE[1] - 18 if not stagger else SIZE[1] - 14), t, fill="black",
                   font=_font())
        if ylabel:  # rotated by 90 degrees, left of the tick labels
            t = _fit(d, ylabel, y1 - y0)
            w, h = _text_size(d, t)
            tmp = Image.new("L", (w + 4, h + 6), 0)
            ImageDraw.Draw(tmp).text((2, 0), t, fill=255, font=_font())
            tmp = tmp.rotate(90, expand=True)
            self.img.paste((0, 0, 0), (2, int((y0 + y1 - tmp.height) / 2)), tmp)

    # data ------------------------------------------------------------------------------------
    def line(self, x, y, rgb, width: int = 2, dashed: bool = False, steps: bool = False):
        """Polyline through the finite points; a non-finite point breaks the line."""
        x, y = _finite_pairs(x, y)
        ok = np.isfinite(x) & np.isfinite(y)
        run: list[tuple[float, float]] = []
        for i in range(len(x) + 1):
            if i < len(x) and ok[i]:
                if steps and run:  # vertical first, then horizontal (PR curves)
                    run.append(self.px(x[i - 1], y[i]))
                run.append(self.px(x[i], y[i]))
                continue
            if len(run) >= 2:
                if dashed:
                    self._dashed(run, rgb, width)
                else:
                    self.ldraw.line(run, fill=rgb + (255,), width=width, joint="curve")
            elif len(run) == 1:
                self.points([x[i - 1]], [y[i - 1]], rgb, r=width)
            run = []

    def _dashed(self, pts, rgb, width, dash: float = 6.0, gap: float = 4.0):
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            length = math.hypot(bx - ax, by - ay)
            t = 0.0
            while t < length:
                u = min(t + dash, length)
                self.ldraw.line([(ax + (bx - ax) * t / length, ay + (by - ay) * t / length),
                                 (ax + (bx - ax) * u / length, ay + (by - ay) * u / length)],
                                fill=rgb + (255,), width=width)
                t += dash + gap

    def points(self, x, y, rgb, r: float = 3):
        x, y = _finite_pairs(x, y)
        for a, b in zip(x, y):
            if math.isfinite(a) and math.isfinite(b):
                px, py = self.px(a, b)
                self.ldraw.ellipse([px - r, py - r, px + r, py + r], fill=rgb + (255,))

    def bars(self, lefts, rights, heights, rgb, alpha: int = 80, base: float = 0.0):
        """Semi-transparent bars blended over what is already drawn."""
        tmp = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        td = ImageDraw.Draw(tmp)
        for a, b, h in zip(lefts, rights, heights):
            if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(h)) or h == base:
                continue
            (pa, pb), (qa, qb) = self.px(a, base), self.px(b, h)
            td.rectangle([min(pa, qa), min(pb, qb), max(pa, qa), max(pb, qb)], fill=rgb + (alpha,))
        self.layer.alpha_composite(tmp)

    def legend(self, name: str, rgb):
        self.legend_entries.append((name, rgb))

    # output ----------------------------------------------------------------------------------
    def _draw_legend(self, loc: str):
        entries = self.legend_entries
        if len(entries) > MAX_LEGEND:
            entries = entries[:MAX_LEGEND - 1] + [(f"+{len(entries) - MAX_LEGEND + 1} more", GUIDE)]
        d, (x0, y0, x1, y1) = self.draw, PLOT_BOX
        names = [_fit(d, n, (x1 - x0) * 0.6) for n, _ in entries]
        w = max(_text_size(d, n)[0] for n in names) + 30
        row = 13
        h = row * len(names) + 6
        lx = x1 - w - 6 if loc[1] == "r" else x0 + 6
        ly = y0 + 6 if loc[0] == "u" else y1 - h - 6
        d.rectangle([lx, ly, lx + w, ly + h], fill="white", outline=(180, 180, 180))
        for i, (n, (_, rgb)) in enumerate(zip(names, entries)):
            cy = ly + 3 + i * row + row / 2
            d.line([(lx + 5, cy), (lx + 20, cy)], fill=rgb, width=3)
            d.text((lx + 25, cy - 7), n, fill="black", font=_font())

    def save(self, path, legend_loc: str = "lr") -> Path:
        x0, y0, x1, y1 = PLOT_BOX
        mask = Image.new("L", SIZE, 0)
        ImageDraw.Draw(mask).rectangle([x0, y0, x1, y1], fill=255)
        clipped = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        clipped.paste(self.layer, (0, 0), mask)
        out = self.img.convert("RGBA")
        out.alpha_composite(clipped)
        self.img = out.convert("RGB")
        self.draw = ImageDraw.Draw(self.img)
        if len(self.legend_entries) > 1 or (self.legend_entries and legend_loc.endswith("!")):
            self._draw_legend(legend_loc.rstrip("!"))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.img.save(path, format="PNG", optimize=True)
        return path


# public plots ----------------------------------------------------------------------------------
def line_plot(series: dict, path, title: str = "", xlabel: str = "", ylabel: str = "", xlim=(0, 1), ylim=(0, 1),
              diagonal: bool = False, legend_loc: str = "lr") -> Path:
    """One line per ``name -> (x, y)``; ``diagonal`` adds the dashed y = x guide."""
    c = _Canvas(title, xlabel, ylabel, xlim, ylim)
    if diagonal:
        lo, hi = min(c.xlim[0], c.ylim[0]), max(c.xlim[1], c.ylim[1])
        c.line([lo, hi], [lo, hi], GUIDE, width=1, dashed=True)
    for i, (name, (x, y)) in enumerate(series.items()):
        c.line(x, y, color(i))
        c.legend(str(name), color(i))
    return c.save(path, legend_loc)


def _finite_scores(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.isfinite(s) & np.isin(y, (0, 1))
    return y[ok].astype(int), s[ok]


def _roc_series(y, scores):
    y, s = _finite_scores(y, scores)
    if not len(y) or y.min() == y.max():
        return np.array([]), np.array([]), float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr, roc_auc(y, s)


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def roc_plot(y, scores, path, by_group: dict | None = None, title: str = "ROC curve") -> Path:
    """ROC of all samples (first colour), plus one curve per ``name -> (y, scores)``; AUC in the legend."""
    c = _Canvas(title, "false positive rate (real called fake)", "true positive rate", (0, 1), (0, 1))
    c.line([0, 1], [0, 1], GUIDE, width=1, dashed=True)
    curves = [("all", y, scores)] + [(str(k), gy, gs) for k, (gy, gs) in (by_group or {}).items()]
    # draw the groups first so that the overall curve stays on top
    for i in reversed(range(len(curves))):
        name, gy, gs = curves[i]
        fpr, tpr, auc = _roc_series(gy, gs)
        c.line(fpr, tpr, color(i), width=2 if i == 0 else 1)
    for i, (name, gy, gs) in enumerate(curves):
        c.legend(f"{name} (AUC {_fmt(_roc_series(gy, gs)[2])})", color(i))
    return c.save(path, "lr!")


def pr_plot(y, scores, path, title: str = "Precision-recall (fake = positive)") -> Path:
    """Step-wise precision-recall curve (the one average precision sums over); AP in the legend."""
    c = _Canvas(title, "recall (fakes found)", "precision", (0, 1), (0, 1.02))
    y, s = _finite_scores(y, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    ap = float("nan")
    if n_pos:
        c.line([0, 1], [n_pos / len(y)] * 2, GUIDE, width=1, dashed=True)  # a random detector
        fpr, tpr, _ = roc_curve(y, s)
        tps, fps = tpr[1:] * n_pos, fpr[1:] * n_neg
        precision = tps / np.maximum(tps + fps, 1e-12)
        c.line(np.r_[0.0, tpr[1:]], np.r_[precision[0], precision], color(0), steps=True)
        ap = average_precision(y, s)
    c.legend(f"AP {_fmt(ap)}", color(0))
    return c.save(path, "ll!")


def histogram_plot(groups: dict, path, bins: int = 30, title: str = "Score distribution",
                   xlabel: str = "score (P(fake))") -> Path:
    """Overlaid semi-transparent histograms with a step outline, one per ``name -> scores``,
    each normalised to its own size (fraction of the group per bin) so groups of any size compare."""
    data = {str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in groups.items()}
    data = {k: v[np.isfinite(v)] for k, v in data.items()}
    allv = np.concatenate(list(data.values())) if data else np.zeros(0)
    if not len(allv) or (allv.min() >= 0 and allv.max() <= 1):
        lo, hi = 0.0, 1.0
    else:
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, max(1, int(bins)) + 1)
    fracs = {k: (np.histogram(v, edges)[0] / len(v) if len(v) else np.zeros(len(edges) - 1)) for k, v in data.items()}
    top = max([f.max() for f in fracs.values() if len(f)] + [0.0])
    c = _Canvas(title, xlabel, "fraction of group", (lo, hi), (0, top * 1.1 if top > 0 else 1.0))
    for i, (k, f) in enumerate(fracs.items()):
        c.bars(edges[:-1], edges[1:], f, color(i), alpha=70)
    for i, (k, f) in enumerate(fracs.items()):
        c.line(np.repeat(edges, 2), np.r_[0.0, np.repeat(f, 2), 0.0], color(i), width=1)  # step outline
        c.legend(f"{k} (n={len(data[k])})", color(i))
    return c.save(path, "ur")


def reliability_plot(y, probs, path, n_bins: int = 10, title: str | None = None) -> Path:
    """Observed fraction of fakes per bin of predicted P(fake) (bars at the bin, points at the mean
    prediction) against the diagonal of perfect calibration; ECE in the title."""
    y, p = _finite_scores(y, probs)
    p = np.clip(p, 0.0, 1.0)
    r = reliability_bins(y, p, n_bins)
    e = ece(y, p, n_bins) if len(y) else float("nan")
    c = _Canvas(title or f"Reliability diagram (ECE {_fmt(e)}, {n_bins} bins)", "predicted P(fake)",
                "observed fraction of fakes", (0, 1), (0, 1))
    c.line([0, 1], [0, 1], GUIDE, width=1, dashed=True)
    edges = np.linspace(0, 1, n_bins + 1)
    c.bars(edges[:-1] + 0.1 / n_bins, edges[1:] - 0.1 / n_bins, r["observed"], color(0), alpha=60)
    c.line(r["mean_predicted"], r["observed"], color(1), width=2)
    c.points(r["mean_predicted"], r["observed"], color(1), r=3)
    c.legend("observed (per bin)", color(0))
    c.legend("at mean prediction", color(1))
    return c.save(path, "ul")


def _num(v) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def robustness_plot(rows: list[dict], path, title: str = "Robustness to perturbations") -> Path:
    """AUC and accuracy per perturbation (rows of ``robustness_grid``), names as x tick labels."""
    n = len(rows)
    names = [str(r.get("perturbation", i)) for i, r in enumerate(rows)]
    x = np.arange(n, dtype=np.float64)
    c = _Canvas(title, "perturbation", "metric", (-0.5, max(n, 1) - 0.5), (0, 1),
                xticks=list(zip(x.tolist(), names)))
    c.line([-0.5, n - 0.5], [0.5, 0.5], GUIDE, width=1, dashed=True)  # chance AUC
    for i, (key, label) in enumerate((("auc", "AUC"), ("accuracy", "accuracy"))):
        v = np.array([_num(r.get(key)) for r in rows], dtype=np.float64)
        c.line(x, v, color(i))
        c.points(x, v, color(i), r=3)
        c.legend(label, color(i))
    return c.save(path, "ll")
