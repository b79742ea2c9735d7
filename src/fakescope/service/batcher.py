"""Micro-batching: concurrent requests share one trip to the model (and its batched forwards).

A request hands its prepared input to `MicroBatcher.submit` and awaits a future. One
worker task takes the first waiting input, keeps collecting for `window_ms` (or until
`max_size` inputs), then runs the whole batch through `fn` in the batcher's one model
thread (`run_in_executor`), so the event loop keeps accepting and answering requests while
the model computes. One batch runs at a time: the model already uses every core, and two
forwards side by side would only contend for them. Always the same thread, too: torch and
the allocator keep per-thread caches; with batches hopping between the threads of a pool,
the server ended a 30 s load test at 665 MiB instead of about 380 (benchmarks/load.py).

Inputs that arrive while a batch computes wait in the queue; the next batch takes all
of them at once (up to `max_size`), so even `window_ms=0` batches under load.
`max_size=1` turns batching off (one forward per request): the baseline of
benchmarks/load.py.

A request that gave up (its timeout cancelled the future) is dropped before its batch
runs, or its result is discarded if the batch was already running.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("fakescope.service")


@dataclass(frozen=True)
class BatchInfo:
    size: int          # inputs in the batch this one rode in
    queued_s: float    # from submit to the start of its batch
    run_s: float       # the batch's compute time (shared by all its inputs)


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], window_ms: float = 5.0, max_size: int = 32):
        if max_size < 1 or window_ms < 0:
            raise ValueError("max_size must be >= 1 and window_ms >= 0")
        self.fn = fn                        # list of inputs -> one output each, in order; runs in a thread
        self.window_s = window_ms / 1000.0
        self.max_size = max_size
        self.sizes: Counter[int] = Counter()  # batch size -> how many batches ran at that size
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None  # the model thread; also usable for warm-up work

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker on the running loop (call from inside it, e.g. the app's lifespan)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="fakescope-model")
            self._task = asyncio.create_task(self._run(), name="fakescope-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        while self._queue is not None and not self._queue.empty():  # nobody will serve these now
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("service is shutting down"))

    @property
    def stats(self) -> dict[str, Any]:
        batches = sum(self.sizes.values())
        items = sum(k * v for k, v in self.sizes.items())
        return {"batches": batches, "images": items, "mean_batch_size": round(items / batches, 3) if batches else None,
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())}}

    # ------------------------------------------------------------ requests
    async def submit(self, item: T) -> tuple[R, BatchInfo]:
        """Queue one input; its output and the batch it rode in, once that batch has run."""
        if self._queue is None or self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut, time.perf_counter()))
        return await fut

    # ------------------------------------------------------------ the worker
    async def _collect(self) -> list[tuple[T, asyncio.Future, float]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_size:
            try:  # everything already waiting joins without delay ...
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:  # ... then wait out the window for latecomers
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [entry for entry in batch if not entry[1].done()]  # drop requests that already gave up

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(self.executor, self.fn, [item for item, _, _ in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(f"batch function returned {len(outputs)} outputs for {len(batch)} inputs")
            except Exception as e:  # the worker must survive; each waiting request reports the failure
                log.exception("batch of %d failed", len(batch))
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            run_s = time.perf_counter() - start
            self.sizes[len(batch)] += 1
            for (_, fut, queued), out in zip(batch, outputs):
                if not fut.done():
                    fut.set_result((out, BatchInfo(len(batch), start - queued, run_s)))


class PixelBudget:
    """Decoded pixels in flight over all requests: an upload waits until its image's pixels (read
    from its header) fit in the budget, so a flood of large images is decoded a few at a time
    instead of all at once. One image larger than the whole budget runs alone."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, pixels: int) -> int:
        n = max(0, min(int(pixels), self.limit))
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.used -= n
            self._cond.notify_all()
