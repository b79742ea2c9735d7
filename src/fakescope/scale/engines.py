"""Run a batch callable over the rows of some shards, here or on Ray; yield its output batches.

Both engines feed the callable the same batches: the rows of one shard in runs of
`rows_per_call` (a shard's last run may be shorter), with two bookkeeping columns, `shard`
(the shard index) and `pos` (the row's position in its shard). Output batches come back
with the same two columns. The local engine yields them in input order; Ray yields them as
workers finish, in any order (the job layer regroups them by shard).
"""
from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .batch import prepared_ahead
from .inputs import Inputs, Shard

ENGINES = ("local", "ray")
DEFAULT_ROWS_PER_CALL = 64


@dataclass
class EngineOptions:
    engine: str = "local"
    rows_per_call: int = DEFAULT_ROWS_PER_CALL   # rows per callable call (forward passes are the model's own size)
    decode_workers: int | None = None            # local: decoding threads (None: automatic)
    threads: int | None = None                   # local: the model's compute threads (None: FAKESCOPE_THREADS or all cores)
    address: str | None = None                   # ray: cluster address; None starts a local Ray
    workers: int = 0                             # ray: model actors (0: one per GPU, else per cpus_per_worker CPUs)
    cpus_per_worker: float = 1.0                 # ray: CPUs reserved per actor (its torch / ORT / decoding threads)
    gpus_per_worker: float = -1.0                # ray: GPUs per actor; -1: 1 when the cluster has GPUs, else 0
    num_cpus: int | None = None                  # ray, local cluster only: CPUs it may use (None: all)
    timings: dict[str, float] = field(default_factory=dict)  # filled in: init, first_output (seconds)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.rows_per_call < 1:
            raise ValueError("rows_per_call must be >= 1")


def iter_calls(inputs: Inputs, shards: Sequence[Shard], rows: int, columns: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    for sh in shards:
        for lo in range(sh.lo, sh.hi, rows):
            hi = min(sh.hi, lo + rows)
            b = inputs.batch(lo, hi, columns)
            b["shard"] = np.full(hi - lo, sh.index, np.int64)
            b["pos"] = np.arange(lo - sh.lo, hi - sh.lo, dtype=np.int64)
            yield b


def run_local(fn, inputs: Inputs, shards: Sequence[Shard], opts: EngineOptions) -> Iterator[dict[str, np.ndarray]]:
    """In this process: decoding of the next batch (`fn.prepare`, a thread) overlaps the model on this one."""
    t0 = time.perf_counter()
    calls = iter_calls(inputs, shards, opts.rows_per_call, inputs.present())
    first = next(calls, None)
    if first is None:
        return
    opts.timings.setdefault("init", 0.0)
    fn.load()  # here, in the thread that runs the model: torch's thread setting is per thread
    with ThreadPoolExecutor(1, thread_name_prefix="fakescope-prepare") as ex:
        for out in prepared_ahead(fn, itertools.chain([first], calls), ex):
            opts.timings.setdefault("first_output", time.perf_counter() - t0)
            yield out


def run(fn_cls: type, fn_kwargs: dict[str, Any], inputs: Inputs, shards: Sequence[Shard],
        opts: EngineOptions) -> Iterator[dict[str, np.ndarray]]:
    """Output batches of `fn_cls(**fn_kwargs)` over `shards`, on the engine `opts` names."""
    if opts.engine == "ray":
        from .ray_engine import run_ray
        yield from run_ray(fn_cls, fn_kwargs, inputs, shards, opts)
    else:
        fn = fn_cls(**fn_kwargs, decode_workers=opts.decode_workers, threads=opts.threads)
        yield from run_local(fn, inputs, shards, opts)
