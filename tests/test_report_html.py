"""PIL-only plots and the HTML evaluation report."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from fakescope.evaluation import plots
from fakescope.evaluation.html_report import write_html_report

X0, Y0, X1, Y1 = plots.PLOT_BOX


def _rgb(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == plots.SIZE
        return np.asarray(im.convert("RGB"))


def _non_white_inside(a) -> int:
    inner = a[Y0 + 2:Y1 - 1, X0 + 2:X1 - 1]
    return int((inner.min(axis=2) < 250).sum())


def _near(a, x, y, rgb, r=3, tol=40) -> bool:
    box = a[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].astype(int)
    return bool((np.abs(box - np.array(rgb)).sum(axis=2) <= tol).any())


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    s = np.clip(np.r_[rng.normal(0.35, 0.15, 60), rng.normal(0.65, 0.15, 60)], 0, 1)
    return y, s


def test_every_plot_writes_a_png_with_content(tmp_path, data):
    y, s = data
    x = np.linspace(0, 1, 20)
    paths = [
        plots.line_plot({"a": (x, x ** 2), "b": (x, np.sqrt(x))}, tmp_path / "line.png", "t", "x", "y", diagonal=True),
        plots.roc_plot(y, s, tmp_path / "roc.png", by_group={"g": (y, s * 0.9)}),
        plots.pr_plot(y, s, tmp_path / "pr.png"),
        plots.histogram_plot({"real": s[y == 0], "fake": s[y == 1]}, tmp_path / "hist.png"),
        plots.reliability_plot(y, s, tmp_path / "rel.png"),
        plots.robustness_plot([{"perturbation": "clean", "auc": 0.9, "accuracy": 0.8},
                               {"perturbation": "jpeg-75", "auc": 0.8, "accuracy": 0.7}], tmp_path / "rob.png"),
    ]
    for p in paths:
        assert p.exists()
        a = _rgb(p)
        assert _non_white_inside(a) > 200, p.name
        # some pixels of a series colour inside the axes
        inner = a[Y0 + 2:Y1 - 1, X0 + 2:X1 - 1].astype(int)
        assert any((np.abs(inner - np.array(c)).sum(axis=2) <= 30).any() for c in plots.PALETTE[:2]), p.name


def test_roc_of_a_perfect_classifier_goes_through_the_top_left_corner(tmp_path):
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    s = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    a = _rgb(plots.roc_plot(y, s, tmp_path / "roc.png"))
    c = plots.PALETTE[0]
    assert _near(a, X0 + 2, Y0 + 2, c)  # (fpr 0, tpr 1)
    assert _near(a, X0 + (X1 - X0) // 2, Y0 + 1, c)  # along tpr = 1
    assert _near(a, X0 + 1, Y0 + (Y1 - Y0) // 2, c)  # along fpr = 0
    # nothing of the curve in the middle of the axes (only the grey chance diagonal is there)
    mid = a[Y0 + 40:Y1 - 40, X0 + 40:X1 - 40].astype(int)
    assert not (np.abs(mid - np.array(c)).sum(axis=2) <= 30).any()


def test_nan_inputs_do_not_crash(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, np.nan, 0.8, np.inf, 0.3, 0.7])
    nan = float("nan")
    for p in (plots.roc_plot(y, s, tmp_path / "roc.png"), plots.pr_plot(y, s, tmp_path / "pr.png"),
              plots.histogram_plot({"r": s, "empty": [], "nan": [nan]}, tmp_path / "h.png"),
              plots.reliability_plot(y, s, tmp_path / "rel.png"),
              plots.line_plot({"x": ([0, 0.5, nan, 1], [0, nan, 0.5, 1])}, tmp_path / "l.png"),
              plots.robustness_plot([{"perturbation": "a", "auc": nan, "accuracy": None},
                                     {"perturbation": "b", "auc": 0.7, "accuracy": 0.6}], tmp_path / "rob.png"),
              plots.robustness_plot([], tmp_path / "rob0.png"),
              plots.roc_plot([0, 0], [0.1, 0.2], tmp_path / "roc1.png")):  # one class only
        _rgb(p)


def test_html_report_references_its_plots_and_escapes_text(tmp_path, data):
    y, s = data
    gens = [None] * 60 + ["<b>x</b>"] * 30 + ["sdxl"] * 30
    from fakescope.evaluation.metrics import summary
    metrics = summary(y, s, 0.5)
    metrics["model"] = "m & co"
    metrics["per_generator"] = {"<b>x</b>": summary(y[:90], s[:90], 0.5)}
    metrics["robustness"] = [{"perturbation": n, "kind": "k", "value": 1, "n": 120, "auc": a, "ap": a,
                              "accuracy": a - 0.1, "acc_real": a, "acc_fake": float("nan")}
                             for n, a in (("clean", 0.9), ("jpeg-75", 0.8), ("blur-<2>", 0.7))]
    metrics["robustness"][1]["auc_by_generator"] = {"<b>x</b>": 0.612, "sdxl": 0.987}
    metrics["format_guard"] = ["all reals are <JPEG>"]
    metrics["errors"] = [{"path": "a", "error": "e"}]
    path = write_html_report(tmp_path / "out", metrics, y, s, gens, title="Eval <1>")
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text()
    written = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    referenced = re.findall(r'src="plots/([^"]+)"', text)
    assert sorted(set(referenced)) == written
    assert {"roc.png", "pr.png", "hist_class.png", "reliability.png", "robustness.png"} <= set(written)
    assert len([w for w in written if w.startswith("hist_gen")]) == 2
    for name in written:
        _rgb(tmp_path / "out" / "plots" / name)
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text
    assert "Eval &lt;1&gt;" in text and "blur-&lt;2&gt;" in text and "&lt;JPEG&gt;" in text
    assert "m &amp; co" in text
    assert "1 image(s) could not be read" in text
    assert "-</td>" in text  # NaN acc_fake of the robustness rows
    per_gen = text.split("ROC-AUC per generator")[1]
    assert "real vs &lt;b&gt;x&lt;/b&gt;" in per_gen and "0.612" in per_gen and "0.987" in per_gen


def test_html_report_without_optional_sections(tmp_path):
    path = write_html_report(tmp_path, {"n": 0}, [], [], [], title="empty")
    text = path.read_text()
    assert "Robustness" not in text and "Format guard" not in text
    assert "0 image(s) could not be read" in text
