"""Files written so that a kill or a full disk never leaves half of one, and JSON-lines files.

    replacing(path)        a temporary name beside `path`, renamed over it when the block ends
                           without error (atomic on POSIX), removed when it fails
    atomic_write(path, b)  the same for bytes in memory
    read_jsonl_lines(path) each line of a JSONL file parsed, a line torn by a killed run left out
    read_jsonl / write_jsonl / JsonlAppender   records of an append-only JSONL file

Every model folder, feature-cache shard, output part, generated image and manifest is written
through `replacing`, so a reader sees the old file, the whole new one, or none.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

NOT_JSON = object()  # the value `read_jsonl_lines` gives a line that is not JSON


@contextmanager
def replacing(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder (unique per process and call, so concurrent
    writers never share one); write the file there. `fsync`: flush it to disk before the rename,
    so a power cut cannot leave an empty file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = False) -> None:
    """Whole or not at all: a failure leaves the old file (or none), never a partial one."""
    with replacing(path, fsync) as tmp:
        tmp.write_bytes(data)


def read_jsonl_lines(path: str | os.PathLike) -> tuple[list[tuple[bytes, Any]], bool]:
    """The lines of a JSONL file, each ending in a newline, with its parsed value (None for a blank
    line, NOT_JSON for one that does not parse), and whether they differ from the file's bytes: a
    last line cut by a killed run (no newline, not JSON) is left out, and a complete last line
    whose newline was not written gets one. Writing the lines back repairs the file, so later
    appends stay valid JSONL."""
    raws = Path(path).read_bytes().splitlines(keepends=True)
    out: list[tuple[bytes, Any]] = []
    changed = False
    for i, raw in enumerate(raws):
        try:
            value = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            if i == len(raws) - 1 and not raw.endswith(b"\n"):
                changed = True  # torn by a kill
                continue
            value = NOT_JSON
        if not raw.endswith(b"\n"):
            raw, changed = raw + b"\n", True
        out.append((raw, value))
    return out, changed


def read_jsonl(path: str | os.PathLike, repair: bool = True) -> list[dict]:
    """The records (JSON values) of a JSONL file; lines that are not JSON are dropped and, with
    `repair`, cut from the file (with a torn last line) so later appends stay valid JSONL."""
    path = Path(path)
    if not path.is_file():
        return []
    lines, changed = read_jsonl_lines(path)
    keep = [(raw, v) for raw, v in lines if v is not NOT_JSON and v is not None]
    if repair and (changed or len(keep) != len(lines)):
        atomic_write(path, b"".join(raw for raw, _ in keep))
    return [v for _, v in keep]


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Replace the whole file atomically."""
    atomic_write(path, b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records))


class JsonlAppender:
    """Append records one per line, flushed after each: a kill loses at most the line being written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
