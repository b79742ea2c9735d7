"""The Ray engine: Ray Data `map_batches` over a fixed pool of actors, one model per actor.

    ray.init(address=... or a local Ray)
    ray.data.from_arrow([<block of input rows + shard, pos>, ...])
        .map_batches(ScoreBatch | EmbedBatch, fn_constructor_kwargs=...,      # the same callable
                     compute=ActorPoolStrategy(size=workers), num_cpus=..., num_gpus=...,
                     max_restarts=-1, max_task_retries=-1)                 # a dead actor is restarted,
        .iter_batches()  -> the driver                                     # its batch retried

Blocks never straddle shards. Rows go to the workers as input rows (paths, tar offsets or,
for `hf:` / compressed tars, the bytes), so workers must see input paths at the same place
as the driver (a shared filesystem); outputs come back to the driver, which alone writes.

Ray is imported here only, and only when a job runs on it (`pip install 'fakescope[ray]'`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .inputs import Inputs, Shard

if TYPE_CHECKING:  # annotations only: engines.py imports this module to run a job
    from .engines import EngineOptions

BLOCK_CALLS = 4  # callable calls per input block: small blocks spread a shard over several actors


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError("--engine ray needs Ray Data: pip install 'fakescope[ray]'") from e
    return ray


def _version(ray) -> tuple[int, int]:
    try:
        major, minor = ray.__version__.split(".")[:2]
        return int(major), int(minor)
    except ValueError:  # a dev build: assume recent
        return (99, 0)


def quiet_data_context(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    for attr, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                        ("verbose_stats_logs", False)):
        if hasattr(ctx, attr):
            setattr(ctx, attr, value)


def connect(opts: EngineOptions) -> bool:
    """Join the cluster at opts.address, or start a local Ray; True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  ignore_reinit_error=True)
    if opts.address:
        ray.init(address=opts.address, **kwargs)
    else:
        ray.init(num_cpus=opts.num_cpus, **kwargs)
    opts.timings["init"] = time.perf_counter() - t0
    return True


def plan_workers(opts: EngineOptions, resources: dict) -> tuple[int, float]:
    """(actors, GPUs per actor) for this cluster."""
    gpus = opts.gpus_per_worker
    if gpus < 0:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if opts.workers:
        return int(opts.workers), gpus
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus)), gpus
    return max(1, int(resources.get("CPU", 1) // max(opts.cpus_per_worker, 1e-9))), gpus


def run_ray(fn_cls: type, fn_kwargs: dict[str, Any], inputs: Inputs, shards: Sequence[Shard],
            opts: EngineOptions) -> Iterator[dict[str, np.ndarray]]:
    import pyarrow as pa

    ray = import_ray()
    started = connect(opts)
    try:
        quiet_data_context(ray)
        n_workers, gpus = plan_workers(opts, ray.cluster_resources())
        columns = inputs.present()
        total = sum(len(sh) for sh in shards)
        # a few calls per block; smaller blocks for a small job, so that every worker gets some
        block = min(opts.rows_per_call * BLOCK_CALLS, max(8, -(-total // (2 * n_workers))))
        tables = []
        for sh in shards:
            for lo in range(sh.lo, sh.hi, block):
                hi = min(sh.hi, lo + block)
                t = inputs.arrow(lo, hi, columns)
                t = t.append_column("shard", pa.array(np.full(hi - lo, sh.index, np.int64)))
                t = t.append_column("pos", pa.array(np.arange(lo - sh.lo, hi - sh.lo, dtype=np.int64)))
                tables.append(t)
        if not tables:
            return
        threads = max(1, int(opts.cpus_per_worker))
        kwargs = {**fn_kwargs, "threads": threads, "decode_workers": threads, "cwd": os.getcwd()}
        try:
            compute = {"compute": ray.data.ActorPoolStrategy(size=n_workers)}
        except TypeError:  # older Ray Data: min_size/max_size only
            compute = {"compute": ray.data.ActorPoolStrategy(min_size=n_workers, max_size=n_workers)}
        # A dead actor is restarted and its batch retried: Ray Data's default for actor pools since
        # 2.4x (max_restarts=-1, max_task_retries=-1); older releases are told so explicitly.
        retries = {} if _version(ray) >= (2, 40) else {"max_restarts": -1, "max_task_retries": -1}
        t0 = time.perf_counter()
        ds = ray.data.from_arrow(tables).map_batches(
            fn_cls, fn_constructor_kwargs=kwargs, batch_size=min(opts.rows_per_call, block), batch_format="numpy",
            num_cpus=opts.cpus_per_worker, num_gpus=gpus, **retries, **compute)
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            opts.timings.setdefault("first_output", time.perf_counter() - t0)
            yield out
    finally:
        if started:
            ray.shutdown()
