"""Job output folders: Parquet part files, one per input shard, and the job's identity.

    OUT/job.json             kind, inputs digest and count, shard size, number of shards, the model
                             (scan) or backbone spec + signature (features), fakescope version
    OUT/manifest.json        features only: {"spec": ...}, the feature cache's manifest for this backbone
    OUT/part-00000.parquet   the rows of shard 0, in input order; written to a temporary name, fsynced
    OUT/part-00001.parquet   and renamed, so a part file is complete or absent, never half-written
    ...

One driver writes a folder at a time (an flock on OUT/.lock). A part file is the only record
that its shard is done: a re-run with the same inputs skips the
shards that have one and computes the rest; nothing is appended to a finished part, so no row
is written twice. Each part's Parquet metadata names its shard id; a re-run over other inputs,
another model or another shard size finds a different job.json and refuses the folder.

The same writer serves the local and the Ray engine, so their outputs are interchangeable.
Scan parts hold the scan records (path, sha256, score, label, threshold, model, model_version,
error, reason; provenance, video and a fused detector's experts as JSON text); feature parts hold path, sha256, feature (fixed-size list of float32), error, label,
generator, text. `register_features` copies feature parts into a FeatureCache, so
`fakescope train` / `features.extract` on the same images read them instead of recomputing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..files import atomic_write, read_jsonl_lines, replacing

JOB_FORMAT = "fakescope.job/1"
_IDENTITY = ("format", "kind", "inputs_sha256", "n_inputs", "shard_size", "n_shards", "config")


class JobMismatch(RuntimeError):
    """The output folder belongs to another job (other inputs, model, backbone or shard size)."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("Parquet output needs pyarrow: pip install 'fakescope[ray]' (or pyarrow)") from e
    return pa, pq


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def fsync_write(path: Path, data: bytes) -> None:
    """Whole or not at all, and on disk before the rename: a full disk or a power cut leaves the
    old file (or none), never a partial or empty one."""
    atomic_write(path, data, fsync=True)


def take_lock(path: Path, busy: str):
    """An exclusive flock on `path` (created if needed), held while the returned file is open. One
    writer per output: a second one fails at once with JobMismatch(busy); the OS drops the lock
    of a killed process, so a re-run after a crash is never blocked."""
    import fcntl
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise JobMismatch(busy) from None
    return f


def jsonl_lines(records: Sequence[dict]) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)


class ResultsStream:
    """`scan --out -`: the same JSON lines on a stream (stdout), nothing resumed, flushed per batch
    so a pipe downstream sees each batch as it is scored."""

    def __init__(self, stream):
        self.stream = stream

    def open(self, *args, **kwargs) -> dict[str, dict]:
        return {}

    def append(self, records: Sequence[dict]) -> None:
        self.stream.write(jsonl_lines(records))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class ResultsFile:
    """A JSONL results file of `fakescope scan --out x.jsonl`, written by one scan at a time.

    `open` takes a lock beside the file (`.x.jsonl.lock`, as the Parquet folder's `.lock`), refuses
    a file that is not a fakescope results file (a manifest, any text) and returns the records
    already there. Lines it cannot use (blank, foreign, not an object) are kept as they are and
    skipped one by one. The file is rewritten, through a temporary file and a rename under the
    lock, only to drop a line torn by a killed run and this model's failed records (scored again,
    so each input keeps one record); every other line stays, byte for byte."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = None
        self._sink = None
        self.others: dict[str, int] = {}  # "model@version" -> its records found in the file (kept as they are)

    def open(self, model: str, version: str, require: str | None = None,
             inputs: Iterable[str] = ()) -> dict[str, dict]:
        from ..errors import OutputError
        if self.path.is_dir():
            raise OutputError(f"--out {self.path} is a folder; JSONL results need a file (or use --format parquet)")
        if self.path.exists() and not self.path.is_file():  # /dev/full, a FIFO: reading it would never end
            raise OutputError(f"--out {self.path} is not a regular file")
        here = self.path.resolve()
        if any(Path(str(i).partition("?")[0]).resolve() == here for i in inputs if i != "-"):
            raise OutputError(f"--out {self.path} is also an input; refusing to write over it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = take_lock(self.path.with_name(f".{self.path.name}.lock"),
                                   f"{self.path} is being written by another running scan; wait for it or use another --out")
        except JobMismatch as e:
            raise OutputError(str(e)) from None
        try:
            done = self._read(model, version, require)
            self._sink = self.path.open("a", encoding="utf-8")
        except BaseException:
            self.close()
            raise
        return done

    def _read(self, model: str, version: str, require: str | None) -> dict[str, dict]:
        from ..errors import OutputError
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        lines, changed = read_jsonl_lines(self.path)  # a line torn by a killed run is cut
        keep: list[bytes] = []
        seen_record = False
        for i, (raw, rec) in enumerate(lines):  # a foreign line (not JSON, not a record) is kept as it is
            is_record = isinstance(rec, dict) and "path" in rec and "model" in rec
            if not seen_record and rec is not None and not is_record:
                raise OutputError(f"--out {self.path} is not a fakescope results file (line {i + 1}); "
                                  "refusing to write over it")
            seen_record = seen_record or is_record
            if is_record and (rec.get("model"), rec.get("model_version")) == (model, version):
                if rec.get("error") is not None or (require and require not in rec and "map_error" not in rec):
                    changed = True  # scored again below; its new record replaces this one
                    continue
                done[str(rec["path"])] = rec
            elif is_record:
                other = f"{rec.get('model')}@{rec.get('model_version')}"
                self.others[other] = self.others.get(other, 0) + 1
            keep.append(raw)
        if changed:
            fsync_write(self.path, b"".join(keep))
        return done

    def append(self, records: Sequence[dict]) -> None:
        """One batch, flushed and fsynced: a killed run loses at most the batch in flight."""
        self._sink.write(jsonl_lines(records))
        self._sink.flush()
        os.fsync(self._sink.fileno())

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class PartStore:
    """One job's output folder."""

    def __init__(self, out: str | Path, job: dict):
        self.dir = Path(out)
        self.job = {"format": JOB_FORMAT, **job}
        self._lock = None

    def _take_lock(self) -> None:
        self._lock = take_lock(self.dir / ".lock", f"{self.dir} is being written by another running job")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> "PartStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ identity
    def open(self) -> "PartStore":
        """Create the folder and job.json, or check that an existing one is this job's."""
        if self.dir.exists() and not self.dir.is_dir():
            raise JobMismatch(f"{self.dir} is a file; Parquet output needs a folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_job()
        except BaseException:
            self.close()
            raise
        return self

    def _check_job(self) -> None:
        path = self.dir / "job.json"
        if path.exists():
            old = json.loads(path.read_text())
            diff = [k for k in _IDENTITY if old.get(k) != self.job.get(k)]
            if diff:
                raise JobMismatch(f"{self.dir} holds another job (different {', '.join(diff)}); "
                                  "use a new --out folder, or delete this one to start over")
        else:
            if any(self.dir.glob("part-*.parquet")):
                raise JobMismatch(f"{self.dir} has part files but no job.json; refusing to mix outputs")
            fsync_write(path, (json.dumps(self.job, indent=1) + "\n").encode())
        for tmp in self.dir.glob(".part-*.tmp"):  # left by a killed run: never a finished part
            tmp.unlink(missing_ok=True)

    def shard_id(self, index: int) -> str:
        return self.job["shard_ids"][index] if "shard_ids" in self.job else str(index)

    def completed(self) -> set[int]:
        """Shards whose part file exists, reads as Parquet and names this shard."""
        _, pq = _pa()
        done = set()
        for f in self.dir.glob("part-*.parquet"):
            try:
                index = int(f.stem.split("-")[1])
                meta = pq.read_metadata(f).metadata or {}
            except Exception:  # unreadable: treated as not done, rewritten by this run
                continue
            if meta.get(b"fakescope.shard_id", b"").decode() == self.shard_id(index):
                done.add(index)
        return done

    # ------------------------------------------------------------ writing
    def write(self, index: int, columns: dict[str, np.ndarray]) -> Path:
        """Shard `index`'s rows (already in input order) as one part file, atomically."""
        pa, pq = _pa()
        table = to_table(self.job["kind"], columns)
        meta = dict(table.schema.metadata or {})
        meta.update({b"fakescope.shard_id": self.shard_id(index).encode(), b"fakescope.shard": str(index).encode(),
                     b"fakescope.kind": self.job["kind"].encode()})
        table = table.replace_schema_metadata(meta)
        path = self.dir / part_name(index)
        with replacing(path, fsync=True) as tmp:
            pq.write_table(table, tmp)
        return path

    # ------------------------------------------------------------ reading
    def read(self, columns: Sequence[str] | None = None):
        return read_parts(self.dir, columns)


def read_parts(out: str | Path, columns: Sequence[str] | None = None):
    """All part files of an output folder, in shard order, as one pyarrow Table."""
    pa, pq = _pa()
    parts = sorted(Path(out).glob("part-*.parquet"))
    tables = [pq.read_table(p, columns=list(columns) if columns else None) for p in parts]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)


def _str(v) -> str | None:
    """A string cell as it comes back from any engine: None, or a float NaN (a column Ray saw
    all-null in some block), means missing."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    return str(v)


def _strings(values) -> list:
    return [_str(v) for v in values]


def to_table(kind: str, columns: dict[str, np.ndarray]):
    pa, _ = _pa()
    if kind == "scan":
        score = np.asarray(columns["score"], dtype=np.float64)
        return pa.table({
            "path": pa.array(_strings(columns["path"]), pa.string()),
            "sha256": pa.array(_strings(columns["sha256"]), pa.string()),
            "score": pa.array(score, pa.float64(), mask=np.isnan(score)),
            "label": pa.array(_strings(columns["label"]), pa.string()),
            "threshold": pa.array(np.asarray(columns["threshold"], np.float64), pa.float64()),
            "model": pa.array(_strings(columns["model"]), pa.string()),
            "model_version": pa.array(_strings(columns["model_version"]), pa.string()),
            "error": pa.array(_strings(columns["error"]), pa.string()),
            "reason": pa.array(_strings(columns.get("reason", [None] * len(score))), pa.string()),
            # JSON text (provenance.py, data/video.py): nested, and its keys may grow
            "provenance": pa.array(_strings(columns.get("provenance", [None] * len(score))), pa.string()),
            "video": pa.array(_strings(columns.get("video", [None] * len(score))), pa.string()),
            "experts": pa.array(_strings(columns.get("experts", [None] * len(score))), pa.string()),
        })
    if kind == "features":
        feats = np.ascontiguousarray(columns["feature"], dtype=np.float32)
        n, d = feats.shape
        failed = np.array([e is not None for e in _strings(columns["error"])], dtype=bool)
        values = pa.array(feats.reshape(-1), pa.float32())
        feature = pa.FixedSizeListArray.from_arrays(values, d, mask=pa.array(failed))
        return pa.table({
            "path": pa.array(_strings(columns["path"]), pa.string()),
            "sha256": pa.array(_strings(columns["sha256"]), pa.string()),
            "feature": feature,
            "error": pa.array(_strings(columns["error"]), pa.string()),
            "label": pa.array(np.asarray(columns["label"], np.int64), pa.int64()),
            "generator": pa.array(_strings(columns["generator"]), pa.string()),
            "text": pa.array(_strings(columns["text"]), pa.string()),
        })
    raise ValueError(f"unknown job kind {kind!r}")


def scan_records(columns: dict[str, np.ndarray]) -> list[dict]:
    """Scan output columns -> the JSON records `fakescope scan` writes (same keys, same order)."""
    out = []
    for i in range(len(columns["path"])):
        score = float(columns["score"][i])
        out.append({"path": str(columns["path"][i]), "sha256": _str(columns["sha256"][i]),
                    "score": None if np.isnan(score) else score, "label": _str(columns["label"][i]),
                    "threshold": float(columns["threshold"][i]),
                    "model": str(columns["model"][i]), "model_version": str(columns["model_version"][i]),
                    "error": _str(columns["error"][i]),
                    "reason": _str(columns["reason"][i]) if "reason" in columns else None,
                    "provenance": _json_cell(columns, "provenance", i)})
        video = _json_cell(columns, "video", i)
        if video is not None:  # only video lines carry it
            out[-1]["video"] = video
        experts = _json_cell(columns, "experts", i)
        if experts is not None:  # only a fused detector's lines: each expert's P(fake), null where it did not run
            out[-1]["experts"] = experts
    return out


def _json_cell(columns: dict, name: str, i: int):
    v = _str(columns[name][i]) if name in columns else None
    return None if v is None else json.loads(v)


def feature_matrix(table) -> np.ndarray:
    """The `feature` column of a features table as an (N, D) float32 array (NaN rows where it failed)."""
    col = table.column("feature").combine_chunks()
    d = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)[col.offset * d:(col.offset + len(col)) * d]
    out = np.array(flat, dtype=np.float32).reshape(len(col), d)
    if col.null_count:
        out[~np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)] = np.nan
    return out


def register_features(out: str | Path, cache_root: str | Path, parts: Iterable[Path] | None = None) -> int:
    """Put the features of a folder's part files into the FeatureCache at `cache_root` (keys:
    image sha256, view 0); rows the cache already holds are skipped. Returns rows added."""
    from ..backbones import BackboneSpec
    from ..features import FeatureCache

    _, pq = _pa()
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    cache = FeatureCache(cache_root, BackboneSpec.from_dict(manifest["spec"]))
    added = 0
    for part in parts if parts is not None else sorted(Path(out).glob("part-*.parquet")):
        table = pq.read_table(part, columns=["sha256", "feature", "error"])
        shas = table.column("sha256").to_pylist()
        errors = table.column("error").to_pylist()
        want = [i for i, (s, e) in enumerate(zip(shas, errors)) if e is None and s is not None and s not in cache]
        seen: set[str] = set()
        want = [i for i in want if not (shas[i] in seen or seen.add(shas[i]))]  # one row per image content
        if want:
            X = feature_matrix(table)
            cache.put([shas[i] for i in want], X[want])
            added += len(want)
    return added
