"""The one data path: sample -> safe decode -> (view) -> preprocess -> batches for a backbone.

Decoding and preprocessing run in a small thread pool ahead of the consumer, so the
backbone (ONNX Runtime / torch, both release the GIL) computes one batch while the
next is being decoded. A bad file becomes an `Item` with an error; it never stops
the stream.
"""
from __future__ import annotations

import io
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from PIL import Image

from .backbones import BackboneSpec, preprocess
from .backbones.fusion import input_sizes
from .backbones.spec import part_specs
from .data.augment import AugmentConfig, make_view
from .data.samples import Sample
from .images import DEFAULT_LIMITS, ImageError, ImageLimits, decode_image_with_hash

T, R = TypeVar("T"), TypeVar("R")


@dataclass
class Item:
    sample: Sample
    view: int = 0
    sha256: str | None = None
    array: np.ndarray | None = None   # preprocessed input, None when the image failed
    error: str | None = None          # "<code>: <message>" for a failed image
    deferred: tuple[int, ...] = ()    # a fusion's parts not read yet, read on demand (prepare_part)
    limits: ImageLimits | None = None # what the image was decoded under (for prepare_part)
    # where the deferred parts sit in the full input, (start, length) each: `array` leaves them out
    # (a referee's native windows are 2.4 MB an image), `stack` puts zeros there
    holes: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def prepare(sample: Sample, spec: BackboneSpec, views: Sequence[int] = (0,),
            limits: ImageLimits = DEFAULT_LIMITS, augment: AugmentConfig | None = None,
            defer: Sequence[int] = ()) -> list[Item]:
    """Decode once, then one preprocessed Item per requested view (view 0 = the image as it is).

    `defer`: parts of a fusion neither decoded nor preprocessed now (left out of the array: `stack`
    puts zeros there), for a detector that may not need them (a referee: detector.py);
    `prepare_part` reads one later."""
    if sample.error is not None:  # known bad before reading (e.g. an archive member over the limit)
        return [Item(sample, v, error=sample.error) for v in views]
    # A fused detector's parts may want different decodes (backbones/fusion.py): one per setting.
    parts = part_specs(spec) if spec.kind == "fusion" else (spec,)
    defer = tuple(sorted(set(defer))) if spec.kind == "fusion" else ()
    drafts = [_draft(part) for part in parts]
    decoded: dict[int | None, Image.Image] = {}
    try:
        read = [(part.kind != "imagesize" or len(parts) == 1) and i not in defer  # imagesize: the file's
                for i, part in enumerate(parts)]                                    # size, any decode records it
        for draft in [d for d, r in zip(drafts, read) if r] or [1]:  # nothing to read now: the smallest decode
            if draft not in decoded:
                decoded[draft], sha = decode_image_with_hash(sample.data if sample.data is not None else sample.path,
                                                             limits=limits, name=sample.path, draft_size=draft)
    except ImageError as e:
        return [Item(sample, v, error=e.reason) for v in views]
    # each part's decode; imagesize takes any (every decode records the file's size)
    images = [decoded[d] if d in decoded else next(iter(decoded.values())) for d in drafts]
    sizes = input_sizes(spec) if defer else []
    holes = tuple((sum(sizes[:i]), sizes[i]) for i in defer)  # where the deferred parts sit in the fused input
    items = []
    for v in views:
        try:
            arrays = [None if i in defer else preprocess(make_view(img, sha, v, augment or AugmentConfig()), part)
                      for i, (part, img) in enumerate(zip(parts, images))]
            if spec.kind != "fusion":
                items.append(Item(sample, v, sha, arrays[0]))
                continue
            array = np.concatenate([a.ravel() for a in arrays if a is not None])
            items.append(Item(sample, v, sha, array, deferred=defer, limits=limits if defer else None,
                              holes=holes))
        except Exception as e:  # a preprocessing failure is still this item's problem only
            items.append(Item(sample, v, sha, error=f"preprocess_failed: {type(e).__name__}: {e}"))
    return items


def prepare_part(item: Item, spec: BackboneSpec, part: int, augment: AugmentConfig | None = None) -> np.ndarray | None:
    """Part `part` of a fusion, for an item `prepare` deferred it in: its sample decoded again (as
    that part decodes) and preprocessed, shaped as the part's backbone reads one image. None if the
    image cannot be read now (a file changed or gone since)."""
    one = part_specs(spec)[part]
    again = prepare(item.sample, one, (item.view,), item.limits or DEFAULT_LIMITS, augment)[0]
    return again.array if again.ok and again.sha256 == item.sha256 else None


def _draft(spec: BackboneSpec) -> int | None:
    """JPEG DCT scaling: decode large photos straight at >= the model's input size (x `draft_gap` when
    the spec sets one). It is part of the preprocessing contract (train and scan both come through
    here), not a lossy shortcut. Native-resolution reads decode in full, and so do squashing ones
    without a draft_gap (as they always did); `imagesize` reads only the file's size (the smallest decode)."""
    if spec.kind == "imagesize":
        return 1
    if spec.windows:  # native windows see every pixel
        return None
    if spec.draft_gap is not None:
        return int(math.ceil(spec.draft_gap * spec.input_size))
    return spec.input_size if spec.resize == "resize_crop" else None


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def map_ahead(fn: Callable[[T], R], inputs: Iterable[T], ahead: int = 64, workers: int | None = None,
              pool: ThreadPoolExecutor | None = None) -> Iterator[R]:
    """fn(x) for every input, in input order, computed in threads while the consumer works on the
    results before it: at most `ahead` inputs are started and not yet consumed. The one
    read-ahead loop: decoding ahead of the model (`iter_items`, a scale batch's rows) and a whole
    batch prepared ahead of the forward pass (scale/batch.py `prepared_ahead`). `pool`: threads
    to use; else `workers` new ones (default `default_workers()`), or none when that is 1."""
    if pool is None:
        workers = workers or default_workers()
        if workers <= 1:
            yield from map(fn, inputs)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="fakescope-decode") as own:
            yield from map_ahead(fn, inputs, ahead, pool=own)
        return
    pending: deque = deque()
    for x in inputs:
        pending.append(pool.submit(fn, x))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def iter_items(samples: Iterable[Sample], spec: BackboneSpec, views: Sequence[int] = (0,),
               limits: ImageLimits = DEFAULT_LIMITS, augment: AugmentConfig | None = None,
               workers: int | None = None, prefetch: int = 64, defer: Sequence[int] = ()) -> Iterator[Item]:
    """Prepared items in input order, at most `prefetch` samples decoded ahead."""
    def one(s: Sample) -> list[Item]:
        return prepare(s, spec, views, limits, augment, defer)
    for items in map_ahead(one, samples, prefetch, workers):
        yield from items


def batched(items: Iterable[Item], batch_size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for it in items:
        batch.append(it)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_isolating(fn: Callable[[list[Item]], R], items: list[Item], spec: BackboneSpec
                  ) -> list[tuple[list[Item], R]]:
    """fn (a model's forward) over `items` as one batch; if it raises, over each item alone, so the
    one input a model cannot take fails by itself (error "forward_failed: ...") and its batch-mates
    keep their results. Returns (items, fn's result) per call that passed, in batch order.

    When no item passes alone, a plain grey image tells the model's fault from the inputs': if the
    model fails on it too (a broken model, a dead session), the batch's error is raised."""
    try:
        return [(items, fn(items))]
    except Exception as batch_error:
        done, errors = [], {}
        for it in items if len(items) > 1 else ():
            try:
                done.append(([it], fn([it])))
            except Exception as e:
                errors[id(it)] = e
        if not done:
            try:
                fn([_control_item(spec)])
            except Exception:
                raise batch_error from None
        passed = {id(d[0][0]) for d in done}
        for it in items:
            if id(it) not in passed:
                e = errors.get(id(it), batch_error)
                it.error = f"forward_failed: {type(e).__name__}: {e}"
        return done


def _control_item(spec: BackboneSpec) -> Item:
    """A 64 px grey PNG through the data path: an input any working model takes."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, "PNG")
    return prepare(Sample(path="<control: grey 64 px>", data=buf.getvalue(), text="a photo"), spec)[0]


def stack(batch: list[Item]) -> np.ndarray | None:
    """The ok items' inputs as one array, each deferred part zeros (its `holes`)."""
    ok = [it for it in batch if it.ok]
    if not ok:
        return None
    if not any(it.holes for it in ok):
        return np.stack([it.array for it in ok])
    width = ok[0].array.size + sum(n for _, n in ok[0].holes)
    out = np.zeros((len(ok), width), ok[0].array.dtype)
    kept: dict[tuple, np.ndarray] = {}  # holes -> the columns an item's array fills (one mask per layout)
    for row, it in zip(out, ok):
        if it.holes not in kept:
            mask = np.ones(width, bool)
            for start, n in it.holes:
                mask[start:start + n] = False
            kept[it.holes] = mask
        row[kept[it.holes]] = it.array
    return out
