"""The per-batch callables: the one piece of code both engines run.

A callable takes a batch as a dict of equal-length arrays (the input rows of `inputs.py`:
`path`, optional `bytes` / `tar`+`offset`+`size`, `label`, `generator`, `text`) and returns a
dict of arrays, one row per input row, in the same order; a broken image is a row with its
`error`, never an exception. It is picklable and loads its model lazily, once per process:
Ray builds one per actor (`map_batches(ScoreBatch, fn_constructor_kwargs=...)`), the local
engine builds one in the calling process.

    ScoreBatch(model)      -> path, sha256, score, label, threshold, model, model_version, error, reason,
                              provenance, video (JSON strings or None: provenance.py, data/video.py)
                              (the records `fakescope scan` writes; scored by Detector.predict_batch;
                              a video row is scored as its sampled frames, in the same forward passes)
    EmbedBatch(backbone)   -> path, sha256, feature (N x D float32), error, label, generator, text
                              (view 0 of `features.extract`: the feature-cache rows)

Columns `shard` and `pos` (a job's bookkeeping) are passed through untouched.

`__call__(batch) == finish(prepare(batch))`: `prepare` reads and decodes (threads; CPU) and
`finish` runs the model. The local engine calls `load()` first, then overlaps `prepare` of the
next batch (a helper thread) with `finish` of this one (the calling thread). Ray calls
`__call__`, which overlaps the same way inside the call: it cuts the batch into forward-sized
chunks and decodes chunk k+1 while the model runs on chunk k. Scores are NaN and features NaN
rows where `error` is set.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Iterable, Iterator

import numpy as np

from ..backbones import preferred_batch_size
from ..data.samples import Sample
from ..images import DEFAULT_LIMITS, FileTooLargeError, ImageLimits, TruncatedImageError, UnreadableFileError
from ..pipeline import Item, default_workers, map_ahead, prepare

PASS_THROUGH = ("shard", "pos")


def _cell(col, i: int):
    if col is None:
        return None
    v = col[i]
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:  # NaN: how an all-null object column may come back from Arrow
        return None
    return v


def _objects(values) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def limits_from(limits: ImageLimits | dict | None) -> ImageLimits:
    if limits is None:
        return DEFAULT_LIMITS
    return limits if isinstance(limits, ImageLimits) else ImageLimits(**limits)


def read_member(tar: str, offset: int, size: int, limits: ImageLimits, name: str) -> bytes:
    """`size` bytes at `offset` of an uncompressed tar: one member, read without the tar module."""
    if size > limits.max_bytes:
        raise FileTooLargeError(f"file is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes", name)
    if offset < 0:  # a member of a compressed tar the lister did not read (over its byte limit)
        raise FileTooLargeError(f"compressed archive member of {size:,} bytes, not read (over the listing's limit)", name)
    try:
        with open(tar, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except FileNotFoundError:
        raise UnreadableFileError(f"no such file {tar}", name) from None
    except OSError as e:
        raise UnreadableFileError(f"cannot read {tar}: {e.strerror or e}", name) from None
    if len(data) != size:
        raise TruncatedImageError(f"{tar} ends inside this member ({len(data)} of {size} bytes)", name)
    return data


def samples_of(batch: dict[str, np.ndarray], limits: ImageLimits) -> list[Sample | Item]:
    """Samples for the rows of a batch; a tar member that cannot be read is already a failed Item."""
    out: list[Sample | Item] = []
    paths = batch["path"]
    for i in range(len(paths)):
        path = str(_cell(paths, i))
        data = _cell(batch.get("bytes"), i)
        label = _cell(batch.get("label"), i)
        s = Sample(path=path, data=data, label=-1 if label is None else int(label),
                   generator=_cell(batch.get("generator"), i), text=_cell(batch.get("text"), i))
        tar = _cell(batch.get("tar"), i)
        if data is None and tar:
            try:
                offset = _cell(batch.get("offset"), i)  # absent: only unread compressed members have none
                s.data = read_member(tar, -1 if offset is None else int(offset), int(_cell(batch["size"], i)), limits, path)
            except (FileTooLargeError, UnreadableFileError, TruncatedImageError) as e:
                out.append(Item(s, error=e.reason))
                continue
        out.append(s)
    return out


def prepared_ahead(fn: "BatchFn", batches: Iterable[dict[str, np.ndarray]],
                   pool: ThreadPoolExecutor) -> Iterator[dict[str, np.ndarray]]:
    """`fn.finish` of each batch in order, while `pool` runs `fn.prepare` (decoding) of the next
    one: the overlap both engines use, the local one across calls, a Ray call across its chunks."""
    return (fn.finish(state) for state in map_ahead(fn.prepare, batches, ahead=1, pool=pool))


class BatchFn:
    """Shared machinery: lazy per-process state, decoding threads, prepare/finish split."""

    def __init__(self, limits: ImageLimits | dict | None = None, decode_workers: int | None = None,
                 threads: int | None = None, cwd: str | None = None):
        self.limits = asdict(limits_from(limits))
        self.decode_workers = decode_workers
        self.threads = threads   # compute threads of this process's model (None: leave as configured)
        self.cwd = cwd           # the driver's folder: relative input and model paths resolve from it
        self._pool: ThreadPoolExecutor | None = None    # decoding threads
        self._ahead: ThreadPoolExecutor | None = None   # the thread preparing the next chunk (__call__)
        self._ready = False

    def __getstate__(self):  # picklable before and after use: per-process state is rebuilt lazily
        state = self.__dict__.copy()
        for k in list(state):
            if k.startswith("_"):
                state[k] = None
        return state

    def _setup(self) -> None:
        """Once per process, before the model loads."""
        if self._ready:
            return
        self._ready = True
        if self.cwd and os.path.isdir(self.cwd) and os.getcwd() != self.cwd:
            os.chdir(self.cwd)  # a worker process of its own (Ray actor); the local engine passes no cwd
        if self.threads:  # one model per worker: it should use that worker's CPUs, not the machine's
            os.environ["FAKESCOPE_THREADS"] = str(int(self.threads))
            try:
                import torch
                torch.set_num_threads(int(self.threads))
            except ImportError:  # pragma: no cover - torch is a core dependency
                pass

    def _decode(self, batch: dict[str, np.ndarray], spec, one=None) -> list:
        """One prepared Item per row (or what `one(sample_or_failed_item, limits)` makes of it)."""
        limits = ImageLimits(**self.limits)
        todo = samples_of(batch, limits)
        workers = self.decode_workers or default_workers()
        if one is None:
            def one(s, limits=limits):
                return s if isinstance(s, Item) else prepare(s, spec, (0,), limits)[0]
        else:
            one = partial(one, limits=limits)

        if workers <= 1 or len(todo) <= 1:
            return [one(s) for s in todo]
        if self._pool is None:  # kept for the process's later batches
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-decode")
        return list(map_ahead(one, todo, ahead=len(todo), pool=self._pool))

    def load(self) -> "BatchFn":
        """Set this process up and load the model, in the calling thread: call it from the thread
        that will run `finish` (torch's intra-op thread count is a per-thread setting)."""
        self._setup()
        self._model()
        return self

    def _model(self):
        raise NotImplementedError

    def prepare(self, batch: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def finish(self, state: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def forward_size(self) -> int:
        """Images per forward pass of this callable's model."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()  # in this thread, before any decoding thread starts
        n, size = len(batch["path"]), self.forward_size()
        if n <= size:
            return self.finish(self.prepare(batch))
        chunks = [{k: v[lo:lo + size] for k, v in batch.items()} for lo in range(0, n, size)]
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="fakescope-prepare")
        outs = list(prepared_ahead(self, chunks, self._ahead))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    @staticmethod
    def _passed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(batch[k]) for k in PASS_THROUGH if k in batch}


@dataclass
class _Row:
    """One input row of a scan: one Item (an image), or one per sampled frame (a video)."""
    items: list
    provenance: dict | None = None
    video: dict | None = None        # data/video.py facts of a video row; None for an image
    sha256: str | None = None        # the video file's hash (frames have none of their own)
    frames: list | None = None       # a video's sampled PIL frames, when kept for the localiser


class ScoreBatch(BatchFn):
    """Detector scores for a batch, through `Detector.predict_batch` (what `fakescope scan` prints).

    `provenance`: "off", "report" (a `provenance` object per image) or "decide" (also the rule of
    provenance.apply_rule). `video`: data/video.py VideoLimits as a dict (sampling and limits)."""

    def __init__(self, model: str | None = None, batch_size: int | None = None, abstain: bool = True,
                 provenance: str = "off", video: dict | None = None, threshold: float | None = None,
                 every_expert: bool = False, **kw):
        super().__init__(**kw)
        from ..provenance import check_mode
        self.model = model
        self.batch_size = batch_size
        self.abstain = abstain  # False: real/fake only, never "uncertain"
        self.threshold = threshold  # `scan --threshold`: this run's threshold instead of the model's
        self.provenance = check_mode(provenance)
        self.video = dict(video or {})
        self.every_expert = every_expert  # a fused detector: every expert's score on every image (detector.py)
        self._det = None

    @property
    def detector(self):
        if self._det is None:
            self._setup()
            from ..detector import load_detector
            self._det = load_detector(self.model)
            self._det.abstain = self.abstain
            self._det.every_expert = self.every_expert
            if self.threshold is not None:
                self._det.threshold = float(self.threshold)
            if self.batch_size:
                self._det.batch_size = self.batch_size
        return self._det

    def _model(self):
        return self.detector.backbone

    def _row(self, s, limits: ImageLimits) -> _Row:
        """Read one input: an image (with its provenance when asked) or a video's sampled frames."""
        from ..data.video import VideoLimits, is_video_name
        from ..images import ImageError, read_bytes

        if isinstance(s, Item):  # a tar member that could not be read
            return _Row([s])
        spec = self.detector.spec
        if is_video_name(s.path):
            return video_row(s, spec, limits, VideoLimits(**self.video), self.provenance)
        if self.provenance == "off":
            return _Row([self.detector.prepare_item(s, limits)])
        from ..provenance import read_provenance
        try:  # read once: the same bytes give the provenance and the pixels
            data = s.data if s.data is not None else read_bytes(s.path, limits, s.path)
        except ImageError as e:
            return _Row([Item(s, error=e.reason)])
        prov = read_provenance(data, s.path)
        one = Sample(path=s.path, data=data, label=s.label, generator=s.generator, text=s.text)
        return _Row([self.detector.prepare_item(one, limits)], prov)

    def prepare(self, batch):
        return batch, self._decode(batch, self.detector.spec, self._row)

    def forward_size(self) -> int:
        from ..detector import forward_size
        return forward_size(self.detector)

    def finish(self, state):
        from ..provenance import apply_rule

        batch, rows = state
        from ..detector import predict_in_forwards
        det = self.detector
        scored = iter(predict_in_forwards(det, [it for row in rows for it in row.items]))
        records, experts = [], []
        for row in rows:
            results = [next(scored) for _ in row.items]
            experts.append(results[0].experts if row.video is None else None)
            if row.video is not None:
                records.append(video_record(row, results, det.threshold, self.provenance))
                continue
            r = results[0]
            label, reason = apply_rule(r.label, r.reason, row.provenance, self.provenance)
            records.append((r.path, r.sha256, r.score, label, r.error, reason, row.provenance, None))
        n = len(records)
        out = {
            "path": _objects([r[0] for r in records]),
            "sha256": _objects([r[1] for r in records]),
            "score": np.array([np.nan if r[2] is None else r[2] for r in records], dtype=np.float64),
            "label": _objects([r[3] for r in records]),
            "threshold": np.full(n, det.threshold, dtype=np.float64),
            "model": _objects([det.id] * n),
            "model_version": _objects([det.version] * n),
            "error": _objects([r[4] for r in records]),
            "reason": _objects([r[5] for r in records]),
            # JSON text: one column type for every engine and Parquet, whatever each object holds
            "provenance": _objects([None if r[6] is None else json.dumps(r[6]) for r in records]),
            "video": _objects([None if r[7] is None else json.dumps(r[7]) for r in records]),
            # a fused detector's experts' scores (heads/fusion.py), JSON text like provenance
            "experts": _objects([None if e is None else json.dumps(e) for e in experts]),
        }
        out.update(self._passed(batch))
        return out


def video_row(s: Sample, spec, limits: ImageLimits, video, provenance: str = "off", keep_frames: bool = False) -> _Row:
    """A video's sampled frames as prepared Items (one row); a video that cannot be read is one failed Item.
    `provenance` other than "off": the row carries provenance.read_video_provenance of the file;
    `keep_frames`: the row keeps the sampled PIL frames (for the localiser)."""
    from ..backbones import preprocess
    from ..data.video import read_video
    from ..images import ImageError

    source = s.data if s.data is not None else s.path
    try:
        v = read_video(source, video, limits, s.path)
    except ImageError as e:
        return _Row([Item(s, error=e.reason)], video={})
    prov = None
    if provenance != "off":
        from ..provenance import read_video_provenance
        prov = read_video_provenance(source, s.path)
    items = []
    for t, img in zip(v.times, v.frames):
        frame = Sample(path=f"{s.path}#t={t:.3f}", text=s.text)
        try:
            items.append(Item(frame, 0, v.sha256, preprocess(img, spec)))
        except Exception as e:  # one frame's failure is that frame's, as for an image
            items.append(Item(frame, 0, v.sha256, error=f"preprocess_failed: {type(e).__name__}: {e}"))
    return _Row(items, prov, video={**v.info(), "times": v.times}, sha256=v.sha256,
                frames=v.frames if keep_frames else None)


def video_record(row: _Row, results: list, threshold: float, provenance: str = "off") -> tuple:
    """One record for a video: the aggregate of its frames (data/video.py `aggregate`), its verdict
    at the model's threshold (then provenance.apply_rule in mode `provenance`), its provenance,
    and every sampled frame's time, score and verdict."""
    from ..data.video import aggregate
    from ..provenance import apply_rule

    path = results[0].path.rsplit("#t=", 1)[0] if row.video else results[0].path
    if not row.video:  # the video itself could not be read
        r = results[0]
        return (r.path, r.sha256, None, None, r.error, None, None, None)
    frames = [{"t": t, "score": r.score, "label": r.label, **({"error": r.error} if r.error else {})}
              for t, r in zip(row.video["times"], results)]
    scores = [r.score for r in results if r.score is not None]
    info = {k: v for k, v in row.video.items() if k != "times"}
    if not scores:
        error = "video_frames_failed: no sampled frame could be scored (" + (results[0].error or "?") + ")"
        return (path, row.sha256, None, None, error, None, row.provenance, {**info, "frames": frames})
    agg = aggregate(scores)
    label, reason = apply_rule("fake" if agg["topk_mean"] >= threshold else "real", None, row.provenance, provenance)
    return (path, row.sha256, agg["topk_mean"], label, None, reason, row.provenance, {**info, **agg, "frames": frames})


class EmbedBatch(BatchFn):
    """Backbone features of view 0 (the clean image), as `features.extract` computes them."""

    def __init__(self, backbone: str = "effnet-lite0", batch_size: int | None = None, **kw):
        super().__init__(**kw)
        self.backbone_spec = backbone
        self.batch_size = batch_size
        self._backbone = None
        self._dim: int | None = None

    @property
    def backbone(self):
        if self._backbone is None:
            self._setup()
            from ..backbones import load_backbone
            self._backbone = load_backbone(self.backbone_spec)
        return self._backbone

    def dim(self) -> int:
        if self._dim is None:  # learnt from one forward pass: layers may add to the pooled width
            from ..features import feature_vector
            s = self.backbone.spec.input_size
            self._dim = int(feature_vector(self.backbone.forward(np.zeros((1, 3, s, s), np.float32)),
                                           self.backbone.spec).shape[1])
        return self._dim

    def _model(self):
        return self.backbone

    def forward_size(self) -> int:
        return self.batch_size or preferred_batch_size(self.backbone)

    def prepare(self, batch):
        return batch, self._decode(batch, self.backbone.spec)

    def finish(self, state):
        from ..features import feature_vector
        from ..pipeline import run_isolating, stack
        batch, items = state
        n = len(items)
        size = self.forward_size()
        index = {id(it): i for i, it in enumerate(items)}
        parts = []  # (indices, rows): forward passes of the backbone's own batch size, failures left out

        def forward(chunk):
            return feature_vector(self.backbone.forward(stack(chunk)), self.backbone.spec)

        for lo in range(0, n, size):
            ok = [it for it in items[lo:lo + size] if it.ok]
            for done, rows in run_isolating(forward, ok, self.backbone.spec) if ok else []:
                parts.append(([index[id(it)] for it in done], rows))
                self._dim = rows.shape[1]
        feats = np.full((n, self.dim()), np.nan, dtype=np.float32)
        for ok, rows in parts:
            feats[ok] = rows
        label = batch.get("label")
        out = {
            "path": _objects([it.sample.path for it in items]),
            "sha256": _objects([it.sha256 for it in items]),
            "feature": feats,
            "error": _objects([it.error for it in items]),
            "label": np.asarray(label, dtype=np.int64) if label is not None else np.full(n, -1, np.int64),
            "generator": _objects([it.sample.generator for it in items]),
            "text": _objects([it.sample.text for it in items]),
        }
        out.update(self._passed(batch))
        return out
