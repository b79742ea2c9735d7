"""Model folders: named arrays in safetensors + everything else in JSON, written atomically.

Every saved model (detectors, localisers) is one folder of these two files (plus README.md, the
model card generated from the JSON, see hub.py), never pickle, so a model file can be inspected, diffed and loaded without running its code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .errors import InputError, MissingModelError, ModelFolderError
from .files import atomic_write, replacing


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def save_model_dir(directory: str | os.PathLike, meta: dict, meta_name: str,
                   arrays: dict[str, np.ndarray], arrays_name: str) -> Path:
    """Write arrays then JSON, each through a temp file + rename: a crash leaves the old model whole."""
    d = Path(directory)
    if "threshold" in meta:  # a NaN threshold judges nothing: refuse to write a model with one
        finite_number(meta["threshold"], "threshold", d)
    text = metadata_text(meta)
    with replacing(d / arrays_name) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    atomic_write(d / meta_name, text.encode())
    from .hub import write_model_card  # every model folder carries its Hub model card (README.md)
    write_model_card(d, json.loads(text))
    return d


def metadata_text(meta: dict) -> str:
    """A model folder's JSON. NaN and infinity are not JSON: an undefined metric is written as null."""
    return json.dumps(_finite_or_null(meta), indent=2, default=_json_default, allow_nan=False) + "\n"


def _finite_or_null(o):
    if isinstance(o, dict):
        return {k: _finite_or_null(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_null(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def read_json(path: Path, what: str) -> dict:
    """A model folder's JSON object; anything else (not JSON, nested past Python's stack, not an
    object) is a ModelFolderError naming the file. Fields that must be finite are checked by
    their readers (finite_number)."""
    try:
        meta = json.loads(path.read_bytes())
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path}: not a valid {what} ({type(e).__name__}: {str(e)[:100]})") from None
    except OSError as e:
        raise ModelFolderError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{path}: not a valid {what} (expected a JSON object)")
    return meta


def load_model_dir(directory: str | os.PathLike, meta_name: str, arrays_name: str, fmt: str,
                   written_by: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a model folder, after checking its format string."""
    d = Path(directory)
    if not (d / meta_name).is_file():
        raise MissingModelError(f"{d}: no {meta_name} (expected a folder written by {written_by})")
    meta = read_json(d / meta_name, meta_name)
    if meta.get("format") != fmt:
        raise ModelFolderError(f"{d}: unsupported {Path(meta_name).stem} format {str(meta.get('format'))[:80]!r} "
                               f"(this fakescope reads {fmt})")
    try:
        arrays = load_file(str(d / arrays_name))
    except FileNotFoundError:
        raise ModelFolderError(f"{d}: no {arrays_name}") from None
    except Exception as e:  # safetensors raises its own error types for anything that is not safetensors
        raise ModelFolderError(f"{d}: {arrays_name} is not a safetensors file ({str(e)[:100]})") from None
    return meta, arrays


def check_model_ref(ref: str, folder) -> None:
    """A hub id or model directory read from a model folder: `~` and `..` climbing out are refused.
    A directory given as an absolute path when the model was trained stays allowed (models trained
    on a local checkpoint record it so); it is read as safetensors only, never unpickled
    (backbones/hf.py), so naming one cannot run code."""
    if ref.startswith("~") or ".." in Path(ref).parts or "\\" in ref or "\0" in ref:
        raise ModelFolderError(f"{folder}: {ref!r} climbs out of its folder")


def finite_number(value, what: str, where) -> float:
    """A float from a model folder's JSON that must be finite (a NaN threshold judges nothing)."""
    import math
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise ModelFolderError(f"{where}: {what} must be a finite number, not {str(value)[:40]}")
    return x


def record_validation(folder: str | os.PathLike, report: dict) -> Path:
    """Keep a `fakescope validate --report` result in a detector folder's metadata
    (`source_validation`: the recipe it validated, each held-out source's row, the camera-photo
    rate) and rewrite its card, which then shows it beside the in-domain numbers."""
    from .hub import write_model_card
    d = Path(folder)
    if not (d / "detector.json").is_file():
        raise MissingModelError(f"{d}: not a detector folder (no detector.json)")
    loso = report.get("leave_one_source_out") if isinstance(report, dict) else None
    if not isinstance(loso, dict) or not loso:
        raise InputError("not a `fakescope validate` report (no leave_one_source_out rows)")
    keep = ("n_real", "n_fake", "auc", "acc_real", "acc_fake")
    rows = {str(name): {**{k: r.get(k) for k in keep},
                        **{k: (r.get("selective") or {}).get(k) for k in ("coverage", "answered_accuracy")}}
            for name, r in loso.items() if isinstance(r, dict)}
    devices = report.get("device_held_out") or {}
    meta = read_json(d / "detector.json", "detector.json")
    meta.setdefault("metadata", {})["source_validation"] = {
        "recipe": {k: report.get(k) for k in ("backbone", "method", "views", "per_class", "options", "uncertainty")},
        "held_out_sources": rows,
        "camera_photos": {k: devices.get(k) for k in ("n", "devices", "fpr", "coverage", "answered_fpr")} if devices else None}
    text = metadata_text(meta)
    atomic_write(d / "detector.json", text.encode())
    return write_model_card(d, json.loads(text))
