"""Model folders: named arrays in safetensors + everything else in JSON, written atomically.

Every saved model (detectors, localisers) is one folder of exactly these two files, never
pickle, so a model file can be inspected, diffed and loaded without running its code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


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
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{arrays_name}.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    os.replace(tmp, d / arrays_name)
    tmp = d / f".{meta_name}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    os.replace(tmp, d / meta_name)
    return d


def load_model_dir(directory: str | os.PathLike, meta_name: str, arrays_name: str, fmt: str,
                   written_by: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a model folder, after checking its format string."""
    d = Path(directory)
    if not (d / meta_name).exists():
        raise FileNotFoundError(f"{d}: no {meta_name} (expected a folder written by {written_by})")
    meta = json.loads((d / meta_name).read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{d}: unsupported {Path(meta_name).stem} format {meta.get('format')!r} (this fakescope reads {fmt})")
    return meta, load_file(str(d / arrays_name))
