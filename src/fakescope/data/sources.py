"""Every source string fakescope reads, turned into Samples: one reader for every command.

    photos/                    a folder, walked recursively (sorted): files under real/ and
                               fake/[generator]/ get that label; scan also takes the others
    a.jpg                      a file (scan); a missing one is kept, to fail as that item
    -                          paths from stdin, one per line (scan)
    data.csv / data.jsonl      a manifest: path[,label,generator,text|caption,group|parent,split]
                               (paths relative to the manifest); `data.csv?split=test` keeps those rows
    x.tar, x.tar.gz            a tar of real/ and fake/[generator]/, read in place, or a WebDataset
                               shard (key.jpg + key.cls/.json/.txt, data/webdataset.py)
    shards/train-{000..099}.tar   shard patterns (braces, globs), each shard read as above
    hf:<hub id or dir>?mapping=d3&split=test        a Hugging Face dataset (data/hf.py)
    cocofake:... genimage:... synthbuster:...       a benchmark's release layout (data/layouts.py)

A folder or tar holding a `manifest.csv` (path,text[,group|parent]) or a CocoGlide `table.csv`
(real,fake,mask,prompt) gives its images those captions and groups: both images of a CocoGlide
row share the real's name as their group, so no split separates a photo from its edit.

`read_source(spec)` (train, eval, validate, compare, leave-out) yields labelled samples only and
refuses a source that cannot have labels. `read_source(spec, labelled=False, in_place=True)`
(scan, features) yields every image, label UNKNOWN where the source has none, notes where an
uncompressed tar member is (`Sample.member`) instead of reading it, and keeps whatever cannot
be read as a row that fails on its own. Paths are named the same way in both modes, so feature
files and training sets line up.

A new kind of source: a function (spec, ReadOptions) -> Iterable[Sample], registered with
`register_prefix("name", reader)`; every command then reads `name:...`.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl

from .layouts import LAYOUTS, iter_layout
from .samples import (REAL, UNKNOWN, Sample, TarMember, is_image_name, is_video_name, label_from_parts, parse_label,
                      set_image)
from .webdataset import expand_shards, group_sample, is_webdataset, iter_groups

if TYPE_CHECKING:  # images.py pulls numpy and Pillow; this module stays light to import
    from ..images import ImageLimits

COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass
class ReadOptions:
    labelled: bool = True            # only samples with a label; a source without labels is an error
    in_place: bool = False           # uncompressed tar members located (Sample.member), not read
    limits: ImageLimits | None = None  # no archive member over limits.max_bytes is read
    stats: dict = field(default_factory=dict)  # counts: samples, skipped_no_image/_label, unreadable_tars, ...
    stdin: Any = None                # where '-' reads paths (default sys.stdin)
    videos: bool = False             # folders also yield video files (scan reads them)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def max_bytes(self) -> int:
        from ..images import DEFAULT_LIMITS
        return (self.limits or DEFAULT_LIMITS).max_bytes


Reader = Callable[[str, ReadOptions], Iterable[Sample]]
PREFIXES: dict[str, Reader] = {}


def register_prefix(name: str, reader: Reader) -> None:
    """Make `name:<rest>` a source every command reads through `reader(spec, options)`."""
    PREFIXES[name] = reader


def read_source(spec: str | Path, labelled: bool = True, in_place: bool = False, limits: ImageLimits | None = None,
                stats: dict | None = None, stdin=None, videos: bool = False) -> Iterator[Sample]:
    """The samples of one source string (see the module doc). Dispatch happens now, so an unknown
    source raises here; reading happens as the iterator is consumed."""
    o = ReadOptions(labelled, in_place, limits, stats if stats is not None else {}, stdin, videos)
    text = str(spec)
    prefix, colon, _ = text.partition(":")
    if colon and prefix in PREFIXES:
        return iter(PREFIXES[prefix](text, o))
    if text == "-":
        if labelled:
            raise ValueError("'-' (paths from stdin) has no labels: give a labelled folder, tar or manifest")
        return _stdin(o)
    base, _, query = text.partition("?")
    if base.endswith((".csv", ".jsonl")) and (not query or query.startswith("split=")) and \
            (labelled or Path(base).is_file()):
        return _manifest(Path(base), query[len("split="):] if query else None, o)
    if any(c in text for c in "{*?[") and not Path(text).exists():
        return _tars(expand_shards(text), o)
    p = Path(text)
    if p.is_dir():
        return _folder(p, o)
    if is_tar_name(text) and (labelled or p.is_file()):
        return _tars([text], o)
    if labelled:
        raise ValueError(f"{spec}: expected a folder with real/ and fake/, a .tar, a .csv/.jsonl manifest, "
                         f"shards, or one of {', '.join(p + ':' for p in PREFIXES)}")
    return iter([Sample(path=str(p) if text else text)])  # a file, or a missing one: that item's error


def load_labelled(source: str | Path, limits: ImageLimits | None = None) -> Iterator[Sample]:
    """The labelled samples of a source: what train, eval, validate and the protocols read."""
    return read_source(source, labelled=True, limits=limits)


def read_reals(sources: Iterable[str | Path]) -> list[Sample]:
    """Real photos: a labelled source gives its reals only, any other (a plain folder, files) is
    taken as real photos throughout (what make-edits and the inpainting builder start from)."""
    out: list[Sample] = []
    for src in sources:
        rows = list(read_source(src, labelled=False))
        if any(s.label != UNKNOWN for s in rows):
            out += [s for s in rows if s.label == REAL]
            continue
        for s in rows:
            s.label = REAL
        out += rows
    return out


def is_tar_name(name: str) -> bool:
    return name.endswith(".tar") or name.endswith(COMPRESSED_TARS)


# ---------------------------------------------------------------- prefixed sources
def _hf(spec: str, o: ReadOptions) -> Iterable[Sample]:
    """hf:<hub id or dir>[?mapping=NAME&split=SPLIT]"""
    ref, _, query = spec[3:].partition("?")
    if not ref.strip():
        from ..errors import InputError
        raise InputError(f"{spec!r}: give a Hugging Face dataset id or saved folder after hf:")
    from .hf import iter_hf_dataset
    opts = dict(parse_qsl(query))
    return iter_hf_dataset(ref, split=opts.get("split", "train"), mapping=opts.get("mapping", "default"),
                           stats=o.stats)


register_prefix("hf", _hf)
for _name in LAYOUTS:
    register_prefix(_name, lambda spec, o: iter_layout(spec))


# ---------------------------------------------------------------- paths
def _stdin(o: ReadOptions) -> Iterator[Sample]:
    for line in (o.stdin or sys.stdin):
        if line.strip():
            yield Sample(path=line.strip())


def _folder(root: Path, o: ReadOptions) -> Iterator[Sample]:
    """Images (and videos with o.videos) under `root`, sorted; in scan a FIFO, socket or dangling
    link is yielded too, to be reported rather than skipped."""
    files = sorted(root.rglob("*"))  # one walk: a folder can hold a million images
    tables = _folder_tables(root, [f for f in files if _is_table(f.name)], o)
    for f in files:
        if f.is_file():
            if not (is_image_name(f.name) or o.videos and is_video_name(f.name)):
                continue
        elif f.is_dir() or o.labelled:
            continue
        rel = f.relative_to(root)
        found = label_from_parts(rel.parts)
        if found is None and o.labelled:
            continue
        text, group = tables.get(rel.as_posix(), (None, None))
        yield Sample(path=str(f), label=found[0] if found else UNKNOWN, generator=found[1] if found else None,
                     text=text, group=group)


def _manifest(path: Path, split: str | None, o: ReadOptions) -> Iterator[Sample]:
    """Rows path[,label,generator,text|caption,group|parent,split]; with `split`, only rows whose
    `split` column equals it. A training manifest needs a label on every row."""
    if path.suffix == ".jsonl":
        rows: Iterable[dict] = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                                if line.strip())
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
        if label in (None, ""):
            if o.labelled:
                raise ValueError(f"{path}: row {row['path']!r} has no label (real/fake or 0/1)")
            label = UNKNOWN
        yield Sample(path=str(file), label=parse_label(label) if label != UNKNOWN else UNKNOWN,
                     generator=row.get("generator") or None, text=row.get("text") or row.get("caption") or None,
                     group=_row_group(row))


def _row_group(row: dict) -> str | None:
    group = row.get("group") or row.get("parent")
    return str(group) if group not in (None, "") else None


# ---------------------------------------------------------------- caption / pair tables
def _table_entries(rows: list[dict], base: str) -> dict[str, tuple[str | None, str | None]]:
    """{member path: (caption, group)} from a manifest.csv (path,text[,group|parent]) or a CocoGlide
    table.csv (real,fake,...,prompt: one caption and one group, the real's name, for the pair)."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for r in rows:
        if "path" in r:
            out[base + r["path"]] = (r.get("text") or None, _row_group(r))
            continue
        pair = (r.get("real") or r.get("fake") or "").rsplit("/", 1)[-1] or None
        for col in ("real", "fake"):
            if r.get(col):
                out[base + r[col]] = (r.get("prompt") or None, pair)
    return out


def _is_table(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in ("manifest.csv", "table.csv")


def _folder_tables(root: Path, tables: list[Path], o: ReadOptions) -> dict:
    out: dict = {}
    for table in tables:
        if table.is_file() and table.stat().st_size <= o.max_bytes():
            rel = table.parent.relative_to(root).as_posix()
            rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8", errors="replace"), newline="")))
            out.update(_table_entries(rows, "" if rel == "." else rel + "/"))
    return out


def tar_table_rows(tar: tarfile.TarFile, member: tarfile.TarInfo, limits: ImageLimits | None = None) -> list[dict]:
    """The rows of a CSV member of an open tar, read within the byte limit (refused above it)."""
    from ..images import DEFAULT_LIMITS, read_tar_member
    data = read_tar_member(tar, member, limits or DEFAULT_LIMITS)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"), newline="")))


# ---------------------------------------------------------------- tars
def _tars(names: Iterable[str], o: ReadOptions) -> Iterator[Sample]:
    """Each tar in turn. In scan a missing or unreadable tar is one row, failing with its own error
    (and counted as unreadable_tars); in training it raises."""
    for name in names:
        if o.labelled:
            yield from _one_tar(name, o)
            continue
        if not Path(name).is_file():
            yield Sample(path=name)
            continue
        try:
            rows = list(_one_tar(name, o))
        except (tarfile.TarError, OSError, EOFError):
            o.count("unreadable_tars")
            rows = [Sample(path=name)]
        yield from rows


def _one_tar(name: str, o: ReadOptions) -> Iterator[Sample]:
    compressed = name.endswith(COMPRESSED_TARS)
    wds = is_webdataset(name)
    with tarfile.open(name, mode="r|*" if compressed else "r:") as tar:
        o.count("shards")
        yield from (_wds_samples if wds else _layout_samples)(tar, name, compressed, o)


def _bytes_or_place(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, path: str, compressed: bool,
                    o: ReadOptions) -> bytes | TarMember | Exception:
    """The member's bytes; with o.in_place, where it is instead (a compressed stream cannot be
    sought into, so its members within the limit are read). Over the limit: never read; the
    error (training) or the declared size (scan: the worker refuses it) says so."""
    from ..images import DEFAULT_LIMITS, ImageError, read_tar_member
    limits = o.limits or DEFAULT_LIMITS
    if o.in_place and not (compressed and member.size <= limits.max_bytes):
        return TarMember(name, -1 if compressed else member.offset_data, member.size)
    try:
        return read_tar_member(tar, member, limits, path)
    except ImageError as e:
        return TarMember(name, -1, member.size) if o.in_place else e


def _layout_samples(tar: tarfile.TarFile, name: str, compressed: bool, o: ReadOptions) -> list[Sample]:
    """Image members, labelled by real/ fake/<generator>/ (in scan the others too); captions and
    groups from the archive's manifest.csv / table.csv, wherever they sit in it. One pass: the
    tables may come after the images."""
    from ..images import ImageError
    tables: dict = {}
    out: list[tuple[str, Sample]] = []
    for member in tar:
        mname = member.name.lstrip("./")
        if not member.isfile():
            continue
        if _is_table(mname):
            try:
                rows = tar_table_rows(tar, member, o.limits)
            except ImageError:  # a table over the limit: the images still count, without captions
                o.count("tables_too_large")
                continue
            tables.update(_table_entries(rows, mname.rsplit("/", 1)[0] + "/" if "/" in mname else ""))
            continue
        if not is_image_name(mname):
            continue
        found = label_from_parts(Path(mname).parts)
        if found is None and o.labelled:
            continue
        s = Sample(path=f"{name}::{mname}", label=found[0] if found else UNKNOWN,
                   generator=found[1] if found else None)
        out.append((mname, set_image(s, _bytes_or_place(tar, member, name, s.path, compressed, o))))
    for mname, s in out:
        s.text, s.group = tables.get(mname, (None, None))
    o.count("samples", len(out))
    return [s for _, s in out]


def _wds_samples(tar: tarfile.TarFile, name: str, compressed: bool, o: ReadOptions) -> Iterator[Sample]:
    """One sample per key group with an image; in scan, groups without a label too."""
    place = lambda member: _bytes_or_place(tar, member, name, f"{name}::{member.name}", compressed, o)  # noqa: E731
    for key, members in iter_groups(tar, place if o.in_place else None, o.limits):
        s, outcome = group_sample(name, key, members, name, labelled=o.labelled)
        o.count(outcome)
        if s is not None:
            yield s


__all__ = ["PREFIXES", "ReadOptions", "is_tar_name", "load_labelled", "read_reals", "read_source", "register_prefix",
           "tar_table_rows"]
