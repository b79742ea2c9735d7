"""(image, mask) pairs for localisation, from a CocoGlide-style layout.

A folder or tar with `real/`, `fake/`, `mask/` and a `table.csv` whose rows are
`real,fake,mask[,prompt,...]` (paths relative to the table). Each row gives two pairs
that share a `group`: the real image with no mask (all zeros) and the edited image with
its mask. Split by group, never by image, so no real photo sits in training while its
edited twin sits in validation. `fakescope make-edits` writes the same layout.
"""
from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..images import read_tar_member
from .sources import tar_table_rows
from .splits import split_by_group


@dataclass
class MaskPair:
    name: str                   # where it came from, for reports
    image: bytes | str          # encoded image bytes (tar) or a file path (folder)
    mask: np.ndarray | None     # (H, W) uint8 {0, 1}; None for a real image (all zeros)
    group: str                  # the table row: real and edited image of one photo share it
    label: int                  # 0 real, 1 edited


def _read_mask(data: bytes) -> np.ndarray:
    m = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    return (m > 127).astype(np.uint8)


def _manifest_pairs(src: Path) -> list[MaskPair]:
    """A CSV/JSONL manifest with path,label,mask[,group] columns: one pair per row; a real row
    needs no mask; `group` ties a real photo to its edits (default: the row's own path)."""
    import json

    from .samples import FAKE, parse_label
    text = src.read_text(encoding="utf-8")
    rows = ([json.loads(x) for x in text.splitlines() if x.strip()] if src.suffix == ".jsonl"
            else list(csv.DictReader(io.StringIO(text))))
    out = []
    for row in rows:
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else src.parent / row["path"]
        label = parse_label(row["label"])
        mask_path = row.get("mask") or ""
        if label == FAKE and not mask_path:
            raise ValueError(f"{src}: edited image {row['path']} has no mask")
        mask = None
        if mask_path:
            mp = Path(mask_path) if Path(mask_path).is_absolute() else src.parent / mask_path
            mask = _read_mask(mp.read_bytes())
        out.append(MaskPair(str(path), str(path), mask, str(row.get("group") or row["path"]), int(label == FAKE)))
    return out


def load_pairs(source: str | Path) -> list[MaskPair]:
    """All pairs of a folder or .tar holding a table.csv (real,fake,mask columns), or of a
    CSV/JSONL manifest with path,label,mask[,group] columns."""
    src = Path(source)
    if src.suffix in (".csv", ".jsonl") and src.is_file() and src.name != "table.csv":
        return _manifest_pairs(src)
    if src.is_dir():
        tables = sorted(src.rglob("table.csv"))
        if not tables:
            raise ValueError(f"{src}: no table.csv (expected real/, fake/, mask/ and table.csv)")
        out: list[MaskPair] = []
        for table in tables:
            for row in csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))):
                base = table.parent
                group = f"{table}:{row['real'] or row['fake']}"
                if row["real"]:  # generated sets keep the real copy of only some photos
                    out.append(MaskPair(str(base / row["real"]), str(base / row["real"]), None, group, 0))
                out.append(MaskPair(str(base / row["fake"]), str(base / row["fake"]),
                                    _read_mask((base / row["mask"]).read_bytes()), group, 1))
        return out
    if not tarfile.is_tarfile(src):
        raise ValueError(f"{src}: expected a folder or a .tar with a table.csv")
    with tarfile.open(src) as tar:
        files = {m.name.lstrip("./"): m for m in tar if m.isfile()}
        tables = [n for n in files if n.endswith("table.csv")]
        if not tables:
            raise ValueError(f"{src}: no table.csv inside")
        out = []
        for table in tables:
            base = str(Path(table).parent)
            rel = (lambda p: p) if base in ("", ".") else (lambda p: f"{base}/{p}")
            rows = tar_table_rows(tar, files[table])  # every member within the byte limit (images.py)
            for row in rows:
                group = f"{src}:{row['real'] or row['fake']}"
                if row["real"]:
                    out.append(MaskPair(f"{src}::{rel(row['real'])}", read_tar_member(tar, files[rel(row['real'])]),
                                        None, group, 0))
                out.append(MaskPair(f"{src}::{rel(row['fake'])}", read_tar_member(tar, files[rel(row['fake'])]),
                                    _read_mask(read_tar_member(tar, files[rel(row['mask'])])), group, 1))
        return out


def split_pairs(pairs: Sequence[MaskPair], val_fraction: float, seed: int = 0) -> tuple[list[MaskPair], list[MaskPair]]:
    """(train, val) split by group (hash of the table row), stable across runs."""
    held = split_by_group([p.group for p in pairs], val_fraction, seed)
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


def load_split_pairs(sources: Sequence[str | Path], val_fraction: float,
                     seed: int = 0) -> tuple[list[MaskPair], list[MaskPair]]:
    """Every source's pairs, each source split by `split_pairs`: (train, val) over all of them."""
    train: list[MaskPair] = []
    val: list[MaskPair] = []
    for src in sources:
        t, v = split_pairs(load_pairs(src), val_fraction, seed)
        train += t
        val += v
    return train, val
