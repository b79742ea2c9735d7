"""WebDataset tar shards read in place, one sample group at a time.

A WebDataset shard is a plain tar whose members are grouped by key: the member name up to the
first dot after the last slash. `train/000123.jpg`, `train/000123.cls` and `train/000123.json`
form the group with key `train/000123`. Members of one group are consecutive in the tar, so the
shard is streamed (tarfile mode "r|*") and only the current group is ever held in memory.

Per group we read:
    .jpg / .jpeg / .png / .webp   the image (Sample.data; the first one in that order wins)
    .cls                          the label: 0/1 or real/fake
    .json                         {"label": ..., "generator": ..., "caption"|"text"|"prompt": ...}
                                  (other keys such as "mask" are ignored here)
    .txt                          the caption (used when the .json has none)

A .cls label wins over a .json one. A group without an image or without a readable label is
skipped and counted in the `stats` dict passed in (keys "samples", "skipped_no_image",
"skipped_no_label", "shards").

Shards are named by a path, a brace pattern (`shard-{000..009}.tar`, `{train,val}.tar`), a glob
(`data/*.tar`), a list of those, or an open binary file object.
"""
from __future__ import annotations

import glob
import json
import re
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Iterator

from .samples import UNKNOWN, Sample, parse_label, set_image

if TYPE_CHECKING:
    from ..images import ImageLimits

WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_META_EXTS = {"cls", "json", "txt"}
_TEXT_KEYS = ("caption", "text", "prompt")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def split_key(name: str) -> tuple[str, str]:
    """'dir/000123.seg.png' -> ('dir/000123', 'seg.png'); the extension is lower-cased."""
    while name.startswith("./"):
        name = name[2:]
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:].lower()


def expand_braces(pattern: str) -> list[str]:
    """Brace expansion as in shells and WebDataset: `a-{00..02}.tar` -> a-00, a-01, a-02 (zero
    padding taken from the bounds), `{x,y}.tar` -> x.tar, y.tar; nested and repeated braces work."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    rng = _RANGE.match(body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        width = max(len(rng.group(1)), len(rng.group(2))) if rng.group(1).startswith("0") or rng.group(2).startswith("0") else 0
        step = 1 if hi >= lo else -1
        items = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        items = body.split(",")
    out: list[str] = []
    for item in items:
        out.extend(expand_braces(head + item + tail))
    return out


def expand_shards(path_or_glob: str | Path | Iterable[str | Path]) -> list[str]:
    """Shard file names from a path, a brace pattern, a glob or a list of those (order kept,
    globs sorted). A name that matches nothing is kept, so opening it reports the error."""
    if isinstance(path_or_glob, (str, Path)):
        patterns = [str(path_or_glob)]
    else:
        patterns = [str(p) for p in path_or_glob]
    shards: list[str] = []
    for pattern in patterns:
        for name in expand_braces(pattern):
            if glob.has_magic(name):
                shards.extend(sorted(glob.glob(name)))
            else:
                shards.append(name)
    return shards


def _label_of(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return parse_label(value)
    except ValueError:
        return None


def group_fields(members: dict) -> tuple[int | None, str | None, str | None]:
    """(label, generator, text) of one sample's members: `.cls` or the `.json` label, the
    `.json` generator, the first `.json` caption key or else `.txt`. Label None when neither says."""
    meta: dict = {}
    if "json" in members:
        try:
            loaded = json.loads(members["json"].decode("utf-8"))
            meta = loaded if isinstance(loaded, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
    label = _label_of(members["cls"].decode("utf-8", "replace").strip()) if "cls" in members else None
    if label is None:
        label = _label_of(meta.get("label"))
    text = next((str(meta[k]) for k in _TEXT_KEYS if meta.get(k)), None)
    if text is None and "txt" in members:
        text = members["txt"].decode("utf-8", "replace").strip() or None
    generator = meta.get("generator") or None
    return label, (str(generator) if generator is not None else None), text


def group_sample(shard: str, key: str, members: dict, source: str | None,
                 labelled: bool = True) -> tuple[Sample | None, str]:
    """The sample of one key group and what became of it ("samples", "skipped_no_image",
    "skipped_no_label"; without `labelled`, a group with no label is kept as UNKNOWN). The image
    value is its bytes, where it is (a TarMember), or the error that kept it unread."""
    image = next((members[e] for e in WDS_IMAGE_EXTS if e in members), None)
    if image is None:
        return None, "skipped_no_image"
    label, generator, text = group_fields(members)
    if label is None and labelled:
        return None, "skipped_no_label"
    s = Sample(path=f"{shard}::{key}", label=UNKNOWN if label is None else label, generator=generator, text=text,
               source=source)
    return set_image(s, image), "samples"


def iter_groups(tar: tarfile.TarFile, image_value=None, limits: ImageLimits | None = None) -> Iterator[tuple[str, dict]]:
    """(key, {ext: value}) per sample of an open WebDataset tar, in member order. Metadata members
    (.cls/.json/.txt) are read as bytes; image members as bytes too, or as `image_value(member)`
    when given (a reader that only notes where the image is). Nothing over `limits.max_bytes` is
    read: such an image's value is its FileTooLargeError, such a metadata member is left out."""
    from ..images import DEFAULT_LIMITS, ImageError, read_tar_member
    limits = limits or DEFAULT_LIMITS
    key: str | None = None
    members: dict = {}
    for member in tar:
        if not member.isfile():
            continue
        k, ext = split_key(member.name)
        if k != key:
            if key is not None:
                yield key, members
            key, members = k, {}
        if ext in WDS_IMAGE_EXTS and image_value is not None:
            members[ext] = image_value(member)
        elif ext in WDS_IMAGE_EXTS or ext in _META_EXTS:
            try:
                members[ext] = read_tar_member(tar, member, limits)
            except ImageError as e:
                if ext in WDS_IMAGE_EXTS:
                    members[ext] = e
    if key is not None:
        yield key, members


def _iter_shard(tar: tarfile.TarFile, shard: str, stats: dict, source: str | None,
                limits: ImageLimits | None = None) -> Iterator[Sample]:
    for key, members in iter_groups(tar, limits=limits):
        sample, outcome = group_sample(shard, key, members, source)
        stats[outcome] = stats.get(outcome, 0) + 1
        if sample is not None:
            yield sample


def iter_webdataset(path_or_glob: str | Path | Iterable[str | Path] | IO[bytes], stats: dict | None = None,
                    source: str | None = None, limits: ImageLimits | None = None) -> Iterator[Sample]:
    """Labelled samples from WebDataset shards, streamed shard by shard, group by group.

    `stats`, when given, is updated in place with counts of yielded samples and skipped groups.
    A binary file object is read as one shard (named by its `.name`, else "<stream>").
    """
    stats = stats if stats is not None else {}
    for k in ("samples", "skipped_no_image", "skipped_no_label", "shards"):
        stats.setdefault(k, 0)
    if hasattr(path_or_glob, "read"):
        name = str(getattr(path_or_glob, "name", "<stream>"))
        with tarfile.open(fileobj=path_or_glob, mode="r|*") as tar:
            stats["shards"] += 1
            yield from _iter_shard(tar, name, stats, source or name, limits)
        return
    if source is None and isinstance(path_or_glob, (str, Path)):
        source = str(path_or_glob)
    for shard in expand_shards(path_or_glob):
        with tarfile.open(shard, mode="r|*") as tar:
            stats["shards"] += 1
            yield from _iter_shard(tar, shard, stats, source or shard, limits)


def is_webdataset(path: str | Path, max_members: int = 32) -> bool:
    """True for a tar laid out as key.ext groups with .cls or .json metadata; False for a tar of
    real/ and fake/ folders, a non-tar or an unreadable file. Reads at most `max_members` members."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            seen_meta = False
            for i, member in enumerate(tar):
                if i >= max_members:
                    break
                if not member.isfile():
                    continue
                parts = member.name.lstrip("./").split("/")
                if any(p in ("real", "fake") for p in parts[:-1]):
                    return False
                _, ext = split_key(member.name)
                if ext in ("cls", "json"):
                    seen_meta = True
            return seen_meta
    except (OSError, tarfile.TarError, EOFError):
        return False


__all__ = ["iter_webdataset", "is_webdataset", "expand_shards", "expand_braces", "split_key", "WDS_IMAGE_EXTS"]
