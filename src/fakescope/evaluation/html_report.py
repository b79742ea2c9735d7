"""A self-contained HTML evaluation report: summary tables and small PNG plots in ``plots/``."""
from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from . import plots

SUMMARY_KEYS = (("auc", "AUC"), ("ap", "AP"), ("accuracy", "acc"), ("acc_real", "acc real"),
                ("acc_fake", "acc fake"), ("tpr_at_1fpr", "TPR@1%FPR"), ("tpr_at_5fpr", "TPR@5%FPR"),
                ("eer", "EER"), ("best_accuracy", "oracle acc"))
ROBUSTNESS_KEYS = (("n", "n"), ("auc", "AUC"), ("ap", "AP"), ("accuracy", "acc"), ("acc_real", "acc real"),
                   ("acc_fake", "acc fake"))

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.plots img{margin:4px;border:1px solid #ddd}.warn{color:#a15c00}.muted{color:#777}"""


def fmt(v) -> str:
    """Numbers to 4 decimals (integers as they are); missing, NaN or non-numeric as "-"."""
    if isinstance(v, bool) or v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(f) else f"{f:.4f}"


def auc_by_generator_table(rows: Sequence[dict]) -> tuple[list[str], list[tuple[str, list]]]:
    """(generators, [(perturbation, [AUC per generator or None])]) of robustness rows; no
    generators when no row has `auc_by_generator` (fakes of one generator or none)."""
    gens = sorted({g for r in rows for g in (r.get("auc_by_generator") or {})})
    if not gens:
        return [], []
    return gens, [(str(r.get("perturbation", i)), [(r.get("auc_by_generator") or {}).get(g) for g in gens])
                  for i, r in enumerate(rows)]


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html_report(out_dir, metrics: dict, y, scores, generators: Sequence[str | None] | None = None,
                      title: str = "fakescope evaluation") -> Path:
    """Write ``out_dir/report.html`` and its plots in ``out_dir/plots/``; returns the HTML path.

    ``y`` (1 = fake), ``scores`` (P(fake)) and ``generators`` (one per sample, None for reals) are
    the evaluated samples; ``metrics`` is the dict of ``evaluate_detector`` (optionally with
    ``robustness`` rows, ``format_guard`` warnings and ``errors``)."""
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    gens = np.array([g or "unnamed" for g in (generators if generators is not None else [None] * len(y))],
                    dtype=object)
    if not (len(y) == len(s) == len(gens)):
        raise ValueError(f"{len(y)} labels, {len(s)} scores and {len(gens)} generators")
    fake_gens = sorted(set(gens[y == 1].tolist()))

    def img(path: Path, alt: str) -> str:
        return f'<img src="plots/{_esc(path.name)}" alt="{_esc(alt)}" width="{plots.SIZE[0]}" height="{plots.SIZE[1]}">'

    parts = [f"<h1>{_esc(title)}</h1>"]
    if metrics.get("model"):
        parts.append(f"<p>Model: <b>{_esc(metrics['model'])}</b>; decision threshold {_esc(fmt(metrics.get('threshold')))}.</p>")

    # summary -----------------------------------------------------------------------------------
    keys = [(k, h) for k, h in SUMMARY_KEYS if k in metrics]
    rows = [["all", fmt(metrics.get("n", len(y)))] + [fmt(metrics.get(k)) for k, _ in keys]]
    for g, m in (metrics.get("per_generator") or {}).items():
        if isinstance(m, dict):
            rows.append([f"real vs {g}", fmt(m.get("n"))] + [fmt(m.get(k)) for k, _ in keys])
    parts += ["<h2>Summary</h2>", _table(["subset", "n"] + [h for _, h in keys], rows)]

    # curves and distributions --------------------------------------------------------------------
    if len(y):
        by_group = {f"real vs {g}": (y[(y == 0) | (gens == g)], s[(y == 0) | (gens == g)])
                    for g in fake_gens} if len(fake_gens) > 1 else None
        roc = plots.roc_plot(y, s, plot_dir / "roc.png", by_group=by_group)
        pr = plots.pr_plot(y, s, plot_dir / "pr.png")
        parts += ["<h2>ROC and precision-recall</h2>",
                  f'<div class="plots">{img(roc, "ROC curve")}{img(pr, "precision-recall curve")}</div>']
        hists = [img(plots.histogram_plot({"real": s[y == 0], "fake": s[y == 1]}, plot_dir / "hist_class.png",
                                          title="Scores: real vs fake"), "score histogram per class")]
        for i, g in enumerate(fake_gens):
            p = plots.histogram_plot({"real": s[y == 0], str(g): s[(y == 1) & (gens == g)]},
                                     plot_dir / f"hist_gen{i}_{_slug(str(g))}.png", title=f"Scores: real vs {g}")
            hists.append(img(p, f"score histogram real vs {g}"))
        parts += ["<h2>Score distributions</h2>", f'<div class="plots">{"".join(hists)}</div>']
        fin = s[np.isfinite(s)]
        parts.append("<h2>Calibration</h2>")
        if len(fin) and fin.min() >= 0 and fin.max() <= 1:
            rel = plots.reliability_plot(y, s, plot_dir / "reliability.png", n_bins=10)
            parts.append(f'<div class="plots">{img(rel, "reliability diagram")}</div>')
        else:
            parts.append('<p class="muted">Scores are not probabilities in [0, 1]: no reliability diagram.</p>')
    else:
        parts.append('<p class="muted">No scored samples: no plots.</p>')

    # selective classification ---------------------------------------------------------------
    rc = metrics.get("risk_coverage")
    if rc and rc.get("coverage"):
        cov = np.asarray(rc["coverage"])
        series = {"accuracy": (cov, np.asarray(rc["accuracy"])), "false-positive rate": (cov, np.asarray(rc["fpr"]))}
        p = plots.line_plot(series, plot_dir / "risk_coverage.png", title="Answering only the most confident images",
                            xlabel="coverage (share answered)", ylabel="on the answered images", legend_loc="ll")
        note = ""
        sel = metrics.get("selective")
        if sel:
            note = (f"<p>The model's \"uncertain\" rule answers {_esc(fmt(sel.get('coverage')))} of these images, "
                    f"with accuracy {_esc(fmt(sel.get('answered_accuracy')))} on them.</p>")
        parts += ["<h2>Selective classification</h2>",
                  "<p>Images ordered by how far their score is from the threshold; at each coverage the "
                  "most confident share is answered.</p>", note, f'<div class="plots">{img(p, "risk-coverage curve")}</div>']

    # robustness ------------------------------------------------------------------------------
    rob = metrics.get("robustness")
    if rob:
        rrows = [[str(r.get("perturbation", i))] + [fmt(r.get(k)) for k, _ in ROBUSTNESS_KEYS]
                 for i, r in enumerate(rob)]
        rp = plots.robustness_plot(list(rob), plot_dir / "robustness.png")
        parts += ["<h2>Robustness (both classes perturbed alike)</h2>",
                  _table(["perturbation"] + [h for _, h in ROBUSTNESS_KEYS], rrows),
                  f'<div class="plots">{img(rp, "robustness plot")}</div>']
        gens, by_gen = auc_by_generator_table(rob)
        if gens:
            parts += ["<h3>ROC-AUC per generator (all reals vs that generator's fakes)</h3>",
                      _table(["perturbation"] + [f"real vs {g}" for g in gens],
                             [[name] + [fmt(a) for a in aucs] for name, aucs in by_gen])]

    # warnings and errors -----------------------------------------------------------------------
    guard = metrics.get("format_guard") or []
    if guard:
        parts += ["<h2>Format guard warnings</h2>",
                  "<ul>" + "".join(f'<li class="warn">{_esc(w)}</li>' for w in guard) + "</ul>"]
    errors = metrics.get("errors") or []
    n_err = errors if isinstance(errors, int) else len(errors)
    parts.append(f"<h2>Errors</h2><p>{n_err} image(s) could not be read"
                 + (" (listed in metrics.json)." if n_err else ".") + "</p>")

    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
