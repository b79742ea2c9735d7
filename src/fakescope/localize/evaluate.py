"""Score a localiser on (image, mask) pairs with the constant-memory pixel metrics, calibrate its
threshold, and write its report folder."""
from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..data.pairs import MaskPair
from ..evaluation.localization import PixelMetrics
from ..evaluation.metrics import roc_auc
from ..images import ImageError
from .localizer import Localizer

DEFAULT_LOCALIZER = "localizer"


def default_localizer_dir() -> Path:
    return Path(str(resources.files("fakescope") / "models" / DEFAULT_LOCALIZER))


def load_localizer(path: str | Path | None = None) -> Localizer:
    """The shipped default localiser, or one saved by `fakescope localizer train`: a folder or a
    Hugging Face Hub id `user/repo[@revision]` (hub.py)."""
    if path in (None, "", DEFAULT_LOCALIZER):
        return Localizer.load(default_localizer_dir())
    from ..hub import resolve_model
    return Localizer.load(resolve_model(path))


def iter_maps(loc: Localizer, sources: Sequence, chunk: int = 16) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(index, map, error) per source, in order. An image costs only itself, never its chunk: an
    unreadable one gets the reader's reason, one the localiser fails on alone "localize_failed: ...".
    When no image of a failing chunk maps alone and some failed for the model's sake, a plain grey
    image tells a broken localiser (it fails too: the chunk's error is raised) from bad inputs."""
    for start in range(0, len(sources), chunk):
        part = list(sources[start:start + chunk])
        try:
            results = [(m, None) for m in loc.predict_maps(part)]
        except Exception as chunk_error:
            results = [_map_alone(loc, src) for src in part]
            model_failed = any(err and err.startswith("localize_failed") for _, err in results)
            if model_failed and all(m is None for m, _ in results):
                try:
                    loc.predict_maps([_control_image()])
                except Exception:
                    raise chunk_error from None
        for j, (m, err) in enumerate(results):
            yield start + j, m, err


def _map_alone(loc: Localizer, source) -> tuple[np.ndarray | None, str | None]:
    try:
        return loc.predict_maps([source])[0], None
    except ImageError as e:
        return None, e.reason
    except Exception as e:
        return None, f"localize_failed: {type(e).__name__}: {e}"


def _control_image():
    from PIL import Image
    return Image.new("RGB", (64, 64), (128, 128, 128))


def evaluate_localizer(loc: Localizer, pairs: Sequence[MaskPair], chunk: int = 16, accumulator: PixelMetrics | None = None,
                       on_map: Callable[[MaskPair, np.ndarray], None] | None = None) -> dict:
    """Pixel metrics on the edited images (IoU / F1 at the localiser's own threshold), image-level
    AUC of the map scores on real vs edited (and of its image rule's edit score, when it has one).
    Pass `accumulator` to keep its curves, `on_map` to see every map."""
    pm = accumulator if accumulator is not None else PixelMetrics(threshold=loc.threshold)
    errors, edit = [], []
    for i, m, err in iter_maps(loc, [p.image for p in pairs], chunk):
        p = pairs[i]
        if err is not None:
            errors.append({"path": p.name, "error": err})
            continue
        if p.mask is not None and p.mask.shape != m.shape:
            errors.append({"path": p.name, "error": f"mask_size: mask {p.mask.shape} vs image {m.shape}"})
            continue
        pm.update(m, p.mask, is_fake=p.label == 1)
        if loc.image_rule:
            edit.append((p.label, loc.edit_score(m), loc.flags_edit(m)))
        if on_map is not None:
            on_map(p, m)
    out = pm.compute()
    if edit:
        y = np.array([e[0] for e in edit])
        flagged = np.array([e[2] for e in edit])
        out["image_auc_edit_score"] = roc_auc(y, [e[1] for e in edit]) if 0 < y.sum() < len(y) else float("nan")
        out["edited_flagged"] = float(flagged[y == 1].mean()) if (y == 1).any() else float("nan")
        out["real_flagged"] = float(flagged[y == 0].mean()) if (y == 0).any() else float("nan")
    out["errors"] = errors
    return out


def calibrate_localizer(loc: Localizer, pairs: Sequence[MaskPair], max_real_fpr: float | None = None,
                        provenance: dict | None = None, recenter: bool = False,
                        image_fraction: float | None = None, image_max_fpr: float = 0.05) -> dict:
    """Set `loc.threshold` (map >= t is "edited") to the grid threshold with the best mean F1 on
    the edited images among `pairs`, optionally only among thresholds that flag at most
    `max_real_fpr` of the real images' pixels. Records the rule, the before / after numbers and
    `provenance` (data, split, ...) in `loc.metadata["threshold_calibration"]` and returns that
    record. ValueError when the pairs cannot decide (no edited image, no real image for the
    limit, or no threshold within it); the localiser is then unchanged.
    `recenter`: fold the threshold into the decoder (`Localizer.recenter`: map >= 0.5 is then the cut).
    `image_fraction`: also set the image rule (`Localizer.image_rule`): the edit score is the mean of
    the map's top `image_fraction` of pixels, its threshold the lowest that flags at most
    `image_max_fpr` of the real images (scored on the recentred maps when `recenter`)."""
    from datetime import datetime, timezone

    if not any(p.label == 1 for p in pairs):
        raise ValueError("no edited images among these pairs: nothing to calibrate on")
    if max_real_fpr is not None and not any(p.label == 0 for p in pairs):
        raise ValueError("a limit on real pixels flagged needs real images among the pairs")
    if image_fraction is not None and not any(p.label == 0 for p in pairs):
        raise ValueError("an image rule needs real images among the pairs")
    pm = PixelMetrics(threshold=loc.threshold)
    real_maps: list[np.ndarray] = []
    keep = (lambda p, m: real_maps.append(m) if p.label == 0 else None) if image_fraction is not None else None
    m = evaluate_localizer(loc, pairs, accumulator=pm, on_map=keep)
    t, f1_t, fpr_t = pm.best_fixed_threshold(max_real_fpr)
    if t != t:  # NaN: no threshold flags few enough real pixels
        raise ValueError(f"no threshold flags at most {max_real_fpr} of the real pixels")
    record = {
        "rule": "grid threshold (step 0.001) with the highest mean per-image F1 on the edited images"
                + (f", among those flagging at most {max_real_fpr} of the real images' pixels" if max_real_fpr is not None else ""),
        **(provenance or {}), "n_edited": m["n_fake"], "n_real": m["n_real"],
        "previous_threshold": loc.threshold, "f1_at_previous": m["f1"], "real_pixel_fpr_at_previous": m["real_pixel_fpr"],
        "f1_at_threshold": f1_t, "real_pixel_fpr_at_threshold": fpr_t, "max_real_fpr": max_real_fpr,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    record["threshold"] = t
    loc.threshold = t
    if recenter:
        loc.recenter(t)
        record["recentred"] = True  # map >= 0.5 is now the cut t of the maps above
    if image_fraction is not None:
        from ..evaluation.localization import top_mean
        from ..evaluation.metrics import threshold_at_fpr
        z = float(np.log(t / (1 - t))) if recenter else 0.0
        scores = [top_mean(1 / (1 + np.exp(-(np.log(np.clip(r, 1e-7, 1 - 1e-7) / np.clip(1 - r, 1e-7, None)) - z))),
                           image_fraction) for r in real_maps]
        loc.image_rule = {"fraction": float(image_fraction), "threshold": threshold_at_fpr(scores, image_max_fpr, margin="midpoint"),
                          "max_real_fpr": image_max_fpr, "n_real": len(scores)}
        record["image_rule"] = loc.image_rule
    loc.metadata["threshold_calibration"] = record
    return record


def write_localizer_report(loc: Localizer, pairs: Sequence[MaskPair], metrics: dict, folder: str | Path,
                           examples: int = 8) -> Path:
    """The `fakescope localizer eval --report` folder: metrics.json (`evaluate_localizer`'s metrics),
    examples.png (image / true mask / predicted heatmap of the first `examples` edited images that
    read) and report.html (the metrics and the grid). Returns the folder."""
    from .localizer import load_image
    from .render import overlay_grid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rows = []
    for p in [p for p in pairs if p.label == 1][:examples]:
        try:
            rows.append((load_image(p.image), p.mask, loc.predict_maps([p.image])[0]))
        except ImageError:
            continue
    overlay_grid(rows, folder / "examples.png")
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else ""
                    for k, v in metrics.items())
    (folder / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>fakescope localiser report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 8px}</style>"
        f"<h1>Localiser report</h1><table>{cells}</table>"
        "<h2>Edited images: image / true mask / predicted heatmap</h2><img src=examples.png>\n")
    return folder
