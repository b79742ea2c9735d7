"""Every input a job reads, as one ordered list of rows, cut into shards.

A row names one image and says where its bytes are; it never holds decoded pixels:

    path       what results call the image: a file path, `shard.tar::key` (WebDataset),
               `file.tar::real/x.jpg` (a tar of folders), `name[split]#i:col` (Hugging Face)
    bytes      the encoded image, only where no worker could read it by itself
               (`hf:` datasets, compressed tars)
    tar, offset, size   a member of an uncompressed tar: the worker reads `size` bytes at
               `offset` of `tar` (so a 1M-image shard set is listed from its headers alone)
    label, generator, text   when the source has them (label -1 = unknown)

Sources: every source string data/sources.py reads (folders, files, '-', manifests, tars,
WebDataset shards, hf:, cocofake:, genimage:, synthbuster:), read for scan (`enumerate_inputs`):
every image, labelled where the source says, uncompressed tar members located rather than read.
Rows are named exactly as training names the same images, so feature files and training sets
line up.

Shards: `plan_shards` cuts the ordered rows into fixed-size runs; shard `i` of a job is
rows `[i*size, (i+1)*size)`. `inputs_digest` hashes the ordered path list: a re-run over
other inputs gets another digest and its job refuses to write into the same folder.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..data.samples import UNKNOWN, Sample
from ..data.sources import read_source
from ..images import ImageLimits

COLUMNS = ("path", "bytes", "tar", "offset", "size", "label", "generator", "text")
_DEFAULTS = {"bytes": None, "tar": None, "offset": -1, "size": -1, "label": UNKNOWN, "generator": None, "text": None}
_INT = {"offset", "size", "label"}


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

    def add_sample(self, s: Sample) -> None:
        where = {"tar": s.member.tar, "offset": s.member.offset, "size": s.member.size} if s.member else {}
        self.add(s.path, bytes=s.data, label=s.label, generator=s.generator, text=s.text, **where)

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
def enumerate_inputs(specs: Iterable[str], stdin=None, stats: dict | None = None,
                     limits: ImageLimits | None = None, videos: bool = False) -> Inputs:
    """All inputs of `specs`, in order, as data/sources.py reads them for scan (every image, labels
    where the source has them, uncompressed tar members located, not read); duplicates are kept as
    given. No tar member over `limits.max_bytes` is read here (its row fails with too_large when
    scanned). `videos`: folders also yield video files (scan reads them)."""
    inputs = Inputs()
    stats = stats if stats is not None else {}
    for spec in specs:
        for s in read_source(str(spec), labelled=False, in_place=True, limits=limits, stats=stats, stdin=stdin,
                             videos=videos):
            inputs.add_sample(s)
    return inputs
