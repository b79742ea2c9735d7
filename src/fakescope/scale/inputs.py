"""Every input a job reads, as one ordered list of rows, cut into shards.

A row names one image and says where its bytes are; it never holds decoded pixels:

    path       what results call the image: a file path, `shard.tar::key` (WebDataset),
               `file.tar::real/x.jpg` (a tar of folders), `name[split]#i:col` (Hugging Face)
    bytes      the encoded image, only where no worker could read it by itself
               (`hf:` datasets, compressed tars)
    tar, offset, size   a member of an uncompressed tar: the worker reads `size` bytes at
               `offset` of `tar` (so a 1M-image shard set is listed from its headers alone)
    label, generator, text   when the source has them (label -1 = unknown)

Sources (`enumerate_inputs`), as `fakescope scan` / `fakescope features` take them:

    photos/                    folders, walked recursively (images only, sorted; videos too for scan)
    a.jpg                      files; a missing file is kept, to be reported as that item's error
    -                          paths from stdin, one per line
    data.csv / data.jsonl      manifests: `path` column (relative to the manifest), optional
                               label, generator, text|caption; `data.csv?split=test` filters rows
    x.tar, x.tar.gz            a tar of real/ and fake/[generator]/ (or any images) or a WebDataset
                               shard (key.jpg + key.cls/.json/.txt); unlabelled members are kept
    shards/train-{000..099}.tar   WebDataset shard patterns (braces, globs)
    hf:<hub id or dir>?mapping=d3&split=test   a Hugging Face dataset (see data/hf.py)

Paths of tar members and labelled rows are named exactly as `data.samples.load_labelled`
names them, so feature files and training sets line up.

Shards: `plan_shards` cuts the ordered rows into fixed-size runs; shard `i` of a job is
rows `[i*size, (i+1)*size)`. `inputs_digest` hashes the ordered path list: a re-run over
other inputs gets another digest and its job refuses to write into the same folder.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..data.samples import (UNKNOWN, is_image_name, iter_input_paths, label_from_parts, load_labelled, parse_label,
                            tar_table_rows)
from ..images import DEFAULT_LIMITS, ImageError, ImageLimits, read_tar_member
from ..data.webdataset import WDS_IMAGE_EXTS, expand_shards, group_fields, is_webdataset, iter_groups

COLUMNS = ("path", "bytes", "tar", "offset", "size", "label", "generator", "text")
_DEFAULTS = {"bytes": None, "tar": None, "offset": -1, "size": -1, "label": UNKNOWN, "generator": None, "text": None}
_INT = {"offset", "size", "label"}
_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class Inputs:
    """Rows stored column by column (a million rows are a few lists, not a million dicts)."""

    def __init__(self):
        self.cols: dict[str, list] = {c: [] for c in COLUMNS}

    def add(self, path: str, **fields) -> None:
        unknown = set(fields) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown input fields {sorted(unknown)}")
        self.cols["path"].append(str(path))
        for c, default in _DEFAULTS.items():
            v = fields.get(c, default)
            self.cols[c].append(default if v is None else v)

    def __len__(self) -> int:
        return len(self.cols["path"])

    @property
    def paths(self) -> list[str]:
        return self.cols["path"]

    def present(self) -> list[str]:
        """The columns any row fills (path always): a job's input schema, the same for every shard."""
        return ["path"] + [c for c in COLUMNS[1:] if any(v != _DEFAULTS[c] for v in self.cols[c])]

    def take(self, index: Sequence[int]) -> "Inputs":
        out = Inputs()
        for c in COLUMNS:
            col = self.cols[c]
            out.cols[c] = [col[i] for i in index]
        return out

    def batch(self, lo: int = 0, hi: int | None = None, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Rows lo..hi as the dict of arrays the batch callables take."""
        hi = len(self) if hi is None else hi
        out = {}
        for c in columns or self.present():
            vals = self.cols[c][lo:hi]
            if c in _INT:
                out[c] = np.asarray(vals, dtype=np.int64)
            else:
                arr = np.empty(len(vals), dtype=object)
                arr[:] = vals
                out[c] = arr
        return out

    def arrow(self, lo: int = 0, hi: int | None = None, columns: Sequence[str] | None = None):
        """Rows lo..hi as a pyarrow Table (the Ray engine's input blocks)."""
        import pyarrow as pa
        types = {"path": pa.string(), "bytes": pa.binary(), "tar": pa.string(), "offset": pa.int64(),
                 "size": pa.int64(), "label": pa.int64(), "generator": pa.string(), "text": pa.string()}
        hi = len(self) if hi is None else hi
        cols = list(columns or self.present())
        return pa.table({c: pa.array(self.cols[c][lo:hi], type=types[c]) for c in cols})


def inputs_digest(inputs: Inputs) -> str:
    """sha256 of the ordered path list: the identity of a job's inputs."""
    h = hashlib.sha256()
    for p in inputs.paths:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    index: int
    lo: int
    hi: int
    id: str          # stable: sha256(inputs digest, shard size, index)

    def __len__(self) -> int:
        return self.hi - self.lo


def plan_shards(n: int, shard_size: int, digest: str) -> list[Shard]:
    if shard_size < 1:
        raise ValueError("shard size must be >= 1")
    out = []
    for i, lo in enumerate(range(0, n, shard_size)):
        sid = hashlib.sha256(f"{digest}:{shard_size}:{i}".encode()).hexdigest()[:16]
        out.append(Shard(i, lo, min(n, lo + shard_size), sid))
    return out


# ---------------------------------------------------------------- enumeration
def _is_tar_name(name: str) -> bool:
    return name.endswith(".tar") or name.endswith(_COMPRESSED)


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "{*?[") and not Path(text).exists()


def enumerate_inputs(specs: Iterable[str], stdin=None, stats: dict | None = None,
                     limits: ImageLimits | None = None, videos: bool = False) -> Inputs:
    """All inputs of `specs` (see the module doc), in order; duplicates are kept as given. No tar
    member over `limits.max_bytes` is read here (its row fails with too_large when scanned).
    `videos`: folders also yield video files (data/video.py VIDEO_SUFFIXES; scan reads them)."""
    limits = limits or DEFAULT_LIMITS
    inputs = Inputs()
    stats = stats if stats is not None else {}
    for spec in specs:
        spec = str(spec)
        base, _, query = spec.partition("?")
        if spec == "-":
            for p in iter_input_paths(["-"], stdin):
                inputs.add(p)
        elif spec.startswith("hf:"):
            for s in load_labelled(spec, limits):
                inputs.add(s.path, bytes=s.data, label=s.label, generator=s.generator, text=s.text)
        elif base.endswith((".csv", ".jsonl")) and Path(base).is_file() and (not query or query.startswith("split=")):
            _manifest_rows(inputs, Path(base), query[len("split="):] if query else None)
        elif _is_pattern(spec):
            for shard in expand_shards(spec):
                _tar_rows(inputs, shard, stats, limits)
        elif Path(spec).is_dir():
            for p in iter_input_paths([spec], videos=videos):
                inputs.add(p)
        elif _is_tar_name(spec) and Path(spec).is_file():
            _tar_rows(inputs, str(Path(spec)), stats, limits)
        else:
            inputs.add(str(Path(spec)) if spec else spec)  # a file, or a missing one: that item's error
    return inputs


def _manifest_rows(inputs: Inputs, path: Path, split: str | None) -> None:
    """path[,label,generator,text|caption,split]; unlike a training manifest the label may be absent."""
    if path.suffix == ".jsonl":
        rows: Iterator[dict] = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    else:
        rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    for row in rows:
        if "path" not in row:
            raise ValueError(f"{path}: a manifest needs a `path` column")
        if split is not None and str(row.get("split", "")) != split:
            continue
        file = Path(str(row["path"]))
        if not file.is_absolute():
            file = path.parent / file
        label = row.get("label")
        inputs.add(str(file), label=parse_label(label) if label not in (None, "") else UNKNOWN,
                   generator=row.get("generator") or None, text=row.get("text") or row.get("caption") or None)


def _tar_rows(inputs: Inputs, shard: str, stats: dict, limits: ImageLimits) -> None:
    p = Path(shard)
    if not p.is_file():
        inputs.add(shard)  # reported as that item's error (no such file)
        return
    compressed = shard.endswith(_COMPRESSED)
    try:
        wds = is_webdataset(p)
        with tarfile.open(shard, mode="r|*" if compressed else "r:") as tar:
            (_wds_rows if wds else _layout_rows)(inputs, tar, shard, compressed, stats, limits)
    except (tarfile.TarError, OSError, EOFError):
        stats["unreadable_tars"] = stats.get("unreadable_tars", 0) + 1
        inputs.add(shard)  # scanned as a file, it fails with this tar's own error


def _member_ref(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, compressed: bool,
                limits: ImageLimits) -> dict:
    if compressed and member.size <= limits.max_bytes:  # no seeking into a compressed stream: ship the bytes
        return {"bytes": read_tar_member(tar, member, limits)}
    # Uncompressed: where it is. Over the limit: never read; its declared size alone makes the
    # worker refuse it (scale.batch.read_member checks the size first).
    return {"tar": name, "offset": -1 if compressed else member.offset_data, "size": member.size}


def _layout_rows(inputs: Inputs, tar: tarfile.TarFile, name: str, compressed: bool, stats: dict,
                 limits: ImageLimits) -> None:
    """Every image member; label and generator from real/ fake/<generator>/ when the path has them,
    captions from a manifest.csv (path,text) or a CocoGlide table.csv (real,fake,prompt)."""
    texts: dict[str, str | None] = {}
    rows: list[tuple[str, dict]] = []
    for member in tar:
        if not member.isfile():
            continue
        mname = member.name.lstrip("./")
        if mname.endswith(("manifest.csv", "table.csv")):
            try:
                table = tar_table_rows(tar, member, limits)
            except ImageError:  # over the limit: the images are still scanned, without captions
                stats["tables_too_large"] = stats.get("tables_too_large", 0) + 1
                continue
            for r in table:
                if "path" in r:
                    texts[r["path"]] = r.get("text") or None
                else:
                    base = str(Path(mname).parent) + "/" if "/" in mname else ""
                    for col in ("real", "fake"):
                        if r.get(col):
                            texts[base + r[col]] = r.get("prompt") or None
            continue
        if not is_image_name(mname):
            continue
        found = label_from_parts(Path(mname).parts)
        fields = _member_ref(tar, member, name, compressed, limits)
        if found:
            fields.update(label=found[0], generator=found[1])
        rows.append((mname, fields))
    for mname, fields in rows:
        inputs.add(f"{name}::{mname}", text=texts.get(mname), **fields)
    stats["samples"] = stats.get("samples", 0) + len(rows)


def _wds_rows(inputs: Inputs, tar: tarfile.TarFile, shard: str, compressed: bool, stats: dict,
              limits: ImageLimits) -> None:
    """One row per key group with an image (the first of .jpg/.jpeg/.png/.webp), as
    `iter_webdataset` reads it, but groups without a label are kept (label unknown)."""
    for key, group in iter_groups(tar, lambda member: _member_ref(tar, member, shard, compressed, limits), limits):
        image = next((group[e] for e in WDS_IMAGE_EXTS if e in group), None)
        if image is None:
            stats["skipped_no_image"] = stats.get("skipped_no_image", 0) + 1
            continue
        label, gen, text = group_fields(group)
        inputs.add(f"{shard}::{key}", label=UNKNOWN if label is None else label,
                   generator=gen, text=text, **image)
        stats["samples"] = stats.get("samples", 0) + 1
