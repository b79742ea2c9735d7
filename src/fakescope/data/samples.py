"""One record for every image fakescope reads (`Sample`), and the label rule of the layouts.

Labelled layouts share one rule: the first path component `real` or `fake` gives the label,
and a folder under `fake/` names the generator (`label_from_parts`). The readers that turn a
source string into Samples are in data/sources.py.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".avif"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi"}  # read by data/video.py (scan only)
REAL, FAKE, UNKNOWN = 0, 1, -1


@dataclass(frozen=True)
class TarMember:
    tar: str        # the archive's path
    offset: int     # of the member's data; -1: a compressed archive's member, never read (over the limit)
    size: int


@dataclass
class Sample:
    path: str                      # what the user knows the image by (file path or archive.tar::member)
    data: bytes | None = None      # raw bytes when the image does not live in its own file
    label: int = UNKNOWN           # REAL, FAKE or UNKNOWN
    generator: str | None = None   # e.g. "ldif"; None for reals and unnamed fakes
    text: str | None = None        # caption / prompt / class name when the source has one
    source: str | None = None      # the --data entry it came from
    error: str | None = None       # "<code>: <detail>" when the source already knows it is unusable
                                   # (an archive member over the byte limit, never read)
    group: str | None = None       # the family splits keep together: a COCOFake parent and its
                                   # children, a CocoGlide (real, edit) pair; None: the sample alone
    member: TarMember | None = None  # where the bytes are in an uncompressed tar, not read yet (scan)

    def group_key(self) -> str:
        """What a split hashes: the group, else the file's own name (the same however the source
        is spelled: relative or absolute, folder or tar). Views of one sample share it."""
        if self.group is not None:
            return self.group
        return self.path.split("::")[-1].replace("\\", "/").rsplit("/", 1)[-1]


def set_image(s: Sample, value: bytes | TarMember | Exception) -> Sample:
    """Where a reader found the image: its bytes, its place in a tar, or the error (with a
    `reason`) that kept it unread."""
    if isinstance(value, TarMember):
        s.member = value
    elif isinstance(value, Exception):
        s.error = value.reason
    else:
        s.data = value
    return s


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
