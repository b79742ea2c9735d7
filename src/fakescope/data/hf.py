"""Labelled samples from Hugging Face `datasets` (hub ids, save_to_disk folders, parquet/image folders).

`datasets` is imported only when a dataset is read: `pip install datasets` to use this module.
Offline (HF_HUB_OFFLINE=1) a hub id works only when it is already in the local cache.

A mapping tells which dataset columns hold our fields. Keys (all optional except "image"):

    image         column name, or a list of image columns (one sample per column per row)
    generator     column name, or a list parallel to `image`; a ClassLabel column gives its class name
    generator_value  a fixed generator name for every fake (when no column has it)
    label         column with the real/fake label (ClassLabel columns compare by class name)
    fixed_label   "real" / "fake" for every image when the dataset has no label column
    real_value / fake_value   value(s) of the label column meaning real / fake (compared as
                  lower-case strings; fake_value "*" = everything that is not real). Without them
                  the label must read as 0/1 or real/fake.
    text          column name or a list of candidates (the first present, non-empty one is used)
    real_image    column holding a real image in the same row (yields one more REAL sample per row)

Image cells may be a datasets Image (read undecoded, so the original file bytes are kept), a
PIL image (encoded as PNG), bytes, an {"bytes", "path"} dict or a local path. A cell that gives
no bytes (e.g. a URL: nothing is fetched) is skipped and counted.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator

from .samples import FAKE, REAL, Sample, parse_label

_KEYS = {"image", "generator", "generator_value", "label", "fixed_label", "real_value", "fake_value", "text",
         "real_image"}

MAPPINGS: dict[str, dict[str, Any]] = {
    # Any dataset with an `image` column and a 0/1 or real/fake `label` column.
    "default": {"image": "image", "label": "label", "text": ["text", "caption", "prompt"]},
    # COCOFake (Amoroso et al., aimagelab) has no official hub copy: it is released as folders,
    # read with the `cocofake:` layout reader (data/layouts.py). This mapping is for flat
    # image/label/caption exports (e.g. a save_to_disk of your own conversion). The hub's
    # nebula/FakeCOCO is a different set (ten newer generators over COCO captions, arrow folders
    # per generator) whose columns we could not check offline: pass a dict mapping for it.
    "cocofake": {"image": "image", "label": "label", "real_value": ["real", "0"], "fake_value": "*",
                 "text": ["caption", "text", "prompt"]},
    # D3 / ELSA: elsaEU/ELSA_D3 (columns checked against the dataset card: id, original_prompt,
    # positive_prompt, negative_prompt, url, model_gen0..3, image_gen0..3, ...). Each row has
    # four generated images (fakes, generator from model_genN) and the LAION `url` of the real
    # image, which is NOT fetched: rows give fakes only, unless you add a local real column and
    # pass {"real_image": "<that column>"} on top of this mapping.
    "d3": {"image": ["image_gen0", "image_gen1", "image_gen2", "image_gen3"],
           "generator": ["model_gen0", "model_gen1", "model_gen2", "model_gen3"],
           "fixed_label": "fake", "label": None, "text": "original_prompt"},
    # GenImage (Zhu et al. 2023) is released as folders <generator>/{train,val}/{ai,nature}/: read
    # it with the `genimage:` layout reader. This mapping is for that layout loaded through
    # `imagefolder` (ClassLabel "ai"/"nature"). Hub mirrors differ: jhutter2/281_Genimage has one
    # config per generator plus a `nature` config, so read each with {"fixed_label": ...} instead.
    "genimage": {"image": "image", "label": "label", "real_value": "nature", "fake_value": "ai"},
    # Synthbuster (Bammey 2023): folders per generator (dalle2, dalle3, firefly, glide,
    # midjourney-v5, stable-diffusion-1-3/-1-4/-2/-xl), reals (RAISE-1k) downloaded separately.
    # Read the release with the `synthbuster:` layout reader; this mapping is for the same folders
    # loaded through `imagefolder`, where the folder is the ClassLabel `label` (label + generator).
    "synthbuster": {"image": "image", "label": "label", "real_value": ["raise", "real"], "fake_value": "*",
                    "generator": "label"},
}
MAPPINGS["elsa_d3"] = MAPPINGS["d3"]


def _datasets():
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise ImportError("reading Hugging Face datasets needs the `datasets` package: pip install datasets") from e
    return datasets


def resolve_mapping(mapping: dict | str) -> dict[str, Any]:
    """A ready mapping by name, or a dict laid over the `default` one (a "base" key names another)."""
    if isinstance(mapping, str):
        if mapping not in MAPPINGS:
            raise ValueError(f"unknown mapping {mapping!r}; ready ones: {', '.join(sorted(MAPPINGS))}")
        return dict(MAPPINGS[mapping])
    custom = dict(mapping)
    base = dict(MAPPINGS[custom.pop("base", "default")])
    unknown = set(custom) - _KEYS
    if unknown:
        raise ValueError(f"unknown mapping keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    base.update(custom)
    return base


def _load(ref: str | Path, split: str, streaming: bool):
    ds = _datasets()
    p = Path(ref)
    if p.is_dir():
        if any((p / f).exists() for f in ("dataset_dict.json", "state.json", "dataset_info.json")) and \
                not any(p.rglob("*.parquet")):
            data = ds.load_from_disk(str(p))
            if isinstance(data, ds.DatasetDict):
                data = data[split]
            return data.to_iterable_dataset() if streaming else data
        parquet = sorted(str(f) for f in p.rglob("*.parquet"))
        if parquet:
            return ds.load_dataset("parquet", data_files=parquet, split="train", streaming=streaming)
        return ds.load_dataset("imagefolder", data_dir=str(p), split=split, streaming=streaming)
    if p.is_file():
        kind = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}.get(p.suffix.lower())
        if kind is None:
            raise ValueError(f"{ref}: expected a dataset folder, a .parquet/.csv/.jsonl file or a hub id")
        return ds.load_dataset(kind, data_files=[str(p)], split="train", streaming=streaming)
    return ds.load_dataset(str(ref), split=split, streaming=streaming)


def _image_bytes(cell: Any) -> bytes | None:
    if cell is None:
        return None
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        return _image_bytes(cell.get("path"))
    if isinstance(cell, (str, Path)):
        f = Path(cell)
        return f.read_bytes() if f.is_file() else None  # URLs and missing files give nothing
    if hasattr(cell, "save"):  # PIL image
        buf = io.BytesIO()
        cell.save(buf, format="PNG")
        return buf.getvalue()
    return None


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _matches(value: str, wanted) -> bool:
    return any(w == "*" or str(w).strip().lower() == value for w in _as_list(wanted))


def iter_hf_dataset(ref: str | Path, split: str = "train", mapping: dict | str = "default", streaming: bool = False,
                    stats: dict | None = None) -> Iterator[Sample]:
    """Labelled samples from a hub id or a local dataset (save_to_disk folder, parquet/image folder,
    parquet/csv/jsonl file). `stats`, when given, is updated with yielded and skipped counts."""
    ds = _datasets()
    m = resolve_mapping(mapping)
    stats = stats if stats is not None else {}
    for k in ("samples", "skipped_no_image", "skipped_no_label"):
        stats.setdefault(k, 0)
    data = _load(ref, split, streaming)
    features = getattr(data, "features", None) or {}

    image_cols = _as_list(m.get("image"))
    if not image_cols:
        raise ValueError("mapping needs an `image` column")
    real_cols = _as_list(m.get("real_image"))
    for col in image_cols + real_cols:  # keep the original file bytes instead of decoding to PIL
        if isinstance(features.get(col), ds.Image):
            data = data.cast_column(col, ds.Image(decode=False))

    def class_name(col: str, value):
        feat = features.get(col)
        if isinstance(feat, ds.ClassLabel) and isinstance(value, int):
            return feat.int2str(value)
        return value

    label_col, fixed = m.get("label"), m.get("fixed_label")
    fixed_label = parse_label(fixed) if fixed is not None else None
    real_value, fake_value = m.get("real_value"), m.get("fake_value")

    def label_of(row) -> int | None:
        if label_col is None or label_col not in row:
            return fixed_label
        value = class_name(label_col, row[label_col])
        if value is None:
            return fixed_label
        text = str(value).strip().lower()
        if real_value is not None or fake_value is not None:
            if _matches(text, real_value):
                return REAL
            if _matches(text, fake_value):
                return FAKE
            return None
        try:
            return parse_label(text)
        except ValueError:
            return None

    gen_cols = _as_list(m.get("generator"))
    text_cols = _as_list(m.get("text"))
    name = str(ref)

    def text_of(row) -> str | None:
        for col in text_cols:
            if row.get(col):
                return str(row[col])
        return None

    def generator_of(row, i: int) -> str | None:
        col = gen_cols[i] if len(gen_cols) == len(image_cols) else (gen_cols[0] if len(gen_cols) == 1 else None)
        if col is not None and row.get(col) is not None:
            return str(class_name(col, row[col]))
        return m.get("generator_value")

    for idx, row in enumerate(data):
        text = text_of(row)
        label = label_of(row)
        for i, col in enumerate(image_cols):
            path = f"{name}[{split}]#{idx}" + (f":{col}" if len(image_cols) > 1 else "")
            if label is None:
                stats["skipped_no_label"] += 1
                continue
            raw = _image_bytes(row.get(col))
            if raw is None:
                stats["skipped_no_image"] += 1
                continue
            stats["samples"] += 1
            yield Sample(path=path, data=raw, label=label, generator=generator_of(row, i) if label == FAKE else None,
                         text=text, source=name)
        for col in real_cols:
            raw = _image_bytes(row.get(col))
            if raw is None:
                stats["skipped_no_image"] += 1
                continue
            stats["samples"] += 1
            yield Sample(path=f"{name}[{split}]#{idx}:{col}", data=raw, label=REAL, text=text, source=name)


__all__ = ["MAPPINGS", "iter_hf_dataset", "resolve_mapping"]
