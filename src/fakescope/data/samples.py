"""One record for every image fakescope reads, and the sources that yield them.

Labelled sources share one layout rule: the first path component `real` or `fake`
gives the label, and a folder under `fake/` names the generator:

    DIR/real/**.jpg   DIR/fake/<generator>/**.png       (a folder)
    file.tar with the same layout inside                (read in place, not extracted)
    manifest.csv / .jsonl with columns path,label[,generator,text]
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:  # images.py pulls numpy and Pillow; this module stays light to import
    from ..images import ImageLimits

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".avif"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi"}  # read by data/video.py (scan only)
REAL, FAKE, UNKNOWN = 0, 1, -1


@dataclass
class Sample:
    path: str                      # what the user knows the image by (file path or tar://member)
    data: bytes | None = None      # raw bytes when the image does not live in its own file
    label: int = UNKNOWN           # REAL, FAKE or UNKNOWN
    generator: str | None = None   # e.g. "ldif"; None for reals and unnamed fakes
    text: str | None = None        # caption / prompt / class name when the source has one
    source: str | None = None      # the --data entry it came from
    error: str | None = None       # "<code>: <detail>" when the source already knows it is unusable
                                   # (an archive member over the byte limit, never read)


def parse_label(value: str | int) -> int:
    text = str(value).strip().lower()
    if text in ("0", "real"):
        return REAL
    if text in ("1", "fake"):
        return FAKE
    raise ValueError(f"label must be real/fake or 0/1, got {value!r}")


def label_from_parts(parts: tuple[str, ...]) -> tuple[int, str | None] | None:
    """('fake', 'ldif', 'x.jpg') -> (FAKE, 'ldif'); None when the path is outside real/ and fake/."""
    for i, part in enumerate(parts[:-1]):
        if part in ("real", "fake"):
            sub = parts[i + 1:-1]
            label = REAL if part == "real" else FAKE
            return label, (sub[0] if label == FAKE and sub else None)
    return None


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


# ---------------------------------------------------------------- unlabelled inputs (scan)
def iter_input_paths(inputs: Iterable[str], stdin=None, videos: bool = False) -> Iterator[str]:
    """Files as given, folders walked recursively (sorted, images only, and videos when `videos`),
    '-' reads paths from stdin.

    A path that does not exist is still yielded, so the scanner reports it as an error for that item.
    """
    for item in inputs:
        if item == "-":
            for line in (stdin or sys.stdin):
                if line.strip():
                    yield line.strip()
            continue
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and (is_image_name(f.name) or videos and is_video_name(f.name)):
                    yield str(f)
                elif not f.is_dir() and not f.is_file():  # a FIFO, socket or dangling link: reported, not skipped
                    yield str(f)
        else:
            yield str(p)


# ---------------------------------------------------------------- labelled sources (train / eval)
def _folder(root: Path) -> Iterator[Sample]:
    for f in sorted(root.rglob("*")):
        if f.is_file() and is_image_name(f.name):
            found = label_from_parts(f.relative_to(root).parts)
            if found:
                yield Sample(path=str(f), label=found[0], generator=found[1])


def tar_table_rows(tar: tarfile.TarFile, member: tarfile.TarInfo, limits: ImageLimits | None = None) -> list[dict]:
    """The rows of a CSV member of an open tar, read within the byte limit (refused above it)."""
    from ..images import DEFAULT_LIMITS, read_tar_member
    data = read_tar_member(tar, member, limits or DEFAULT_LIMITS)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"), newline="")))


def _tar_texts(tar: tarfile.TarFile, limits: ImageLimits | None = None) -> dict[str, str]:
    """Captions by member name, from `manifest.csv` (path,text) or CocoGlide `table.csv`."""
    from ..images import ImageError
    texts: dict[str, str] = {}
    for member in tar:
        name = member.name.lstrip("./")
        if not (member.isfile() and name.endswith(("manifest.csv", "table.csv"))):
            continue
        try:
            rows = tar_table_rows(tar, member, limits)
        except ImageError:  # a caption table over the limit: the images still count, without captions
            continue
        for r in rows:
            if "path" in r:
                texts[r["path"]] = r.get("text") or None
            else:
                base = str(Path(name).parent) + "/" if "/" in name else ""
                for col in ("real", "fake"):
                    if r.get(col):
                        texts[base + r[col]] = r.get("prompt") or None
    return texts


def _tar(path: Path, limits: ImageLimits | None = None) -> Iterator[Sample]:
    """A tar of real/ and fake/[generator]/ read in place, one image in memory at a time. Captions
    come from a `manifest.csv` (path,text: the shared wild/ layout) or a CocoGlide `table.csv`
    (real,fake,mask,prompt: the pair's prompt is the caption of both images), wherever they sit
    in the archive: a first pass reads only those tables (headers are skipped over, not read)."""
    from ..images import DEFAULT_LIMITS, ImageError, read_tar_member
    limits = limits or DEFAULT_LIMITS
    with tarfile.open(path) as tar:
        texts = _tar_texts(tar, limits)
    with tarfile.open(path) as tar:
        for member in tar:
            name = member.name.lstrip("./")
            found = label_from_parts(Path(name).parts) if member.isfile() and is_image_name(name) else None
            if found:
                s = Sample(path=f"{path}::{name}", label=found[0], generator=found[1], text=texts.get(name))
                try:
                    s.data = read_tar_member(tar, member, limits, s.path)
                except ImageError as e:  # that image's error; the rest of the archive goes on
                    s.error = e.reason
                yield s


def _manifest(path: Path, split: str | None = None) -> Iterator[Sample]:
    """Rows path,label[,generator,text|caption,split]; paths relative to the manifest. With
    `split`, only rows whose `split` column equals it (`data.csv?split=test`)."""
    if path.suffix == ".jsonl":
        rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    else:
        rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    for row in rows:
        if split is not None and str(row.get("split", "")) != split:
            continue
        file = Path(row["path"])
        if not file.is_absolute():
            file = path.parent / file
        yield Sample(path=str(file), label=parse_label(row["label"]), generator=row.get("generator") or None,
                     text=row.get("text") or row.get("caption") or None)


def load_labelled(source: str | Path, limits: ImageLimits | None = None) -> Iterator[Sample]:
    """Samples with labels from a folder (real/, fake/[generator]/), a tar of that layout, WebDataset
    shards (`shards/train-{000..099}.tar`, read in place), a CSV/JSONL manifest, or a Hugging Face
    dataset (`hf:<hub id or saved dir>?mapping=d3|genimage|synthbuster|cocofake&split=train`), or a
    benchmark in its release layout (`cocofake:`, `genimage:`, `synthbuster:`, see data/layouts.py)."""
    text = str(source)
    base, _, query = text.partition("?")
    if base.endswith((".csv", ".jsonl")) and query.startswith("split="):
        return _manifest(Path(base), split=query[len("split="):])
    if text.startswith("hf:"):  # hf:<hub id or dir>[?mapping=NAME&split=SPLIT]
        if not text[3:].partition("?")[0].strip():
            from ..errors import InputError
            raise InputError(f"{text!r}: give a Hugging Face dataset id or saved folder after hf:")
        from urllib.parse import parse_qsl
        from .hf import iter_hf_dataset
        ref, _, query = text[3:].partition("?")
        opts = dict(parse_qsl(query))
        return iter_hf_dataset(ref, split=opts.get("split", "train"), mapping=opts.get("mapping", "default"))
    if text.split(":", 1)[0] in ("cocofake", "genimage", "synthbuster"):  # a benchmark's release layout
        from .layouts import iter_layout
        return iter_layout(text)
    if any(c in text for c in "{*?[") and not Path(text).exists():  # a WebDataset shard pattern
        from .webdataset import iter_webdataset
        return iter_webdataset(text, limits=limits)
    p = Path(source)
    if p.is_dir():
        return _folder(p)
    if p.suffix in (".tar",) or p.name.endswith((".tar.gz", ".tgz")):
        from .webdataset import is_webdataset, iter_webdataset
        return iter_webdataset(str(p), limits=limits) if is_webdataset(p) else _tar(p, limits)
    if p.suffix in (".csv", ".jsonl"):
        return _manifest(p)
    raise ValueError(f"{source}: expected a folder with real/ and fake/, a .tar, or a .csv/.jsonl manifest")


def held_out(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether `key` falls in the held-out `fraction`: a seeded hash, so every run and every
    script draws the same split for the same keys (file names, pair ids)."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def balanced_subset(samples: list[Sample], per_class: int | None, seed: int = 0) -> list[Sample]:
    """At most `per_class` of each label, drawn with a fixed seed (order of the source kept)."""
    if not per_class:
        return samples
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in (REAL, FAKE):
        idx = [i for i, s in enumerate(samples) if s.label == label]
        keep.update(rng.sample(idx, min(per_class, len(idx))))
    return [s for i, s in enumerate(samples) if i in keep]
