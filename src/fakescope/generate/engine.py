"""Running a per-batch worker over planned items: in this process, or one pipeline per Ray actor.

Items are plain dicts (strings, numbers, bytes); a batch is a dict of numpy arrays, one per
column (Ray Data's "numpy" batch format), and the worker returns another dict of arrays with
one entry per input item (`key`, `error`, `record`). The worker writes the image files itself
(atomically), so with Ray the output folder must be on storage every actor can write (a shared
file system); the driver alone appends the manifest/table lines, as results come back.
"""
from __future__ import annotations

import json
from typing import Callable, Iterator, Sequence

import numpy as np

ENGINES = ("local", "ray")


def to_columns(items: Sequence[dict]) -> dict[str, np.ndarray]:
    keys = list(items[0]) if items else []
    out = {}
    for k in keys:
        arr = np.empty(len(items), dtype=object)
        arr[:] = [it.get(k) for it in items]
        out[k] = arr
    return out


def from_columns(batch: dict) -> list[dict]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    rows = []
    for i in range(n):
        row = {}
        for k in keys:
            v = batch[k][i]
            row[k] = v.item() if isinstance(v, np.generic) else v
        rows.append(row)
    return rows


def result_columns(keys: list, errors: list, records: list) -> dict[str, np.ndarray]:
    """The worker's answer: key, error ("" when fine) and the record as a JSON string (so every
    column is a plain string array, whatever the record holds)."""
    k = np.empty(len(keys), dtype=object)
    e = np.empty(len(keys), dtype=object)
    r = np.empty(len(keys), dtype=object)
    k[:], e[:] = list(keys), [x or "" for x in errors]
    r[:] = [json.dumps(x, ensure_ascii=False) if x is not None else "" for x in records]
    return {"key": k, "error": e, "record": r}


def iter_results(batch: dict) -> Iterator[tuple[str, str, dict | None]]:
    """(key, error, record) per item of a worker's answer."""
    for row in from_columns(batch):
        rec = json.loads(row["record"]) if row.get("record") else None
        yield str(row["key"]), str(row.get("error") or ""), rec


def optional(batch: dict, column: str, i: int):
    """batch[column][i], or None when the column is absent or the value is null (None/NaN):
    Ray drops or turns into NaN what every row left empty."""
    if column not in batch:
        return None
    v = batch[column][i]
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _drop_empty_columns(items: Sequence[dict]) -> list[dict]:
    empty = [k for k in (items[0] if items else {}) if all(it.get(k) is None for it in items)]
    return [{k: v for k, v in it.items() if k not in empty} for it in items] if empty else list(items)


def _chunks(items: Sequence[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def run_local(worker, items: Sequence[dict], batch_size: int, on_batch: Callable[[dict], None]) -> None:
    """worker(batch) for consecutive batches of `items`, in this process."""
    try:
        for chunk in _chunks(items, max(1, batch_size)):
            on_batch(worker(to_columns(chunk)))
    finally:
        release = getattr(worker, "release", None)
        if release:
            release()


def run_ray(worker_cls, ctor_args: tuple, items: Sequence[dict], batch_size: int,
            on_batch: Callable[[dict], None], actors: int | None = None, gpus_per_actor: float | None = None,
            address: str | None = None, num_cpus: int | None = None, cpus_per_actor: float = 1.0) -> None:
    """Ray Data `map_batches` over a fixed actor pool; each actor builds one `worker_cls(*ctor_args)`
    and so loads one pipeline. Cluster connection and pool sizing are the scale-out module's
    (`fakescope.scale.ray_engine`): `actors` default one per GPU of the cluster (else one per
    `cpus_per_actor` CPUs), `gpus_per_actor` default 1 when the cluster has GPUs, else 0; a dead
    actor is restarted and its batch retried. A Ray started here is shut down at the end."""
    from ..scale.engines import EngineOptions
    from ..scale.ray_engine import connect, import_ray, plan_workers, quiet_data_context

    ray = import_ray()
    if not items:
        return
    opts = EngineOptions(engine="ray", rows_per_call=max(1, batch_size), address=address, workers=actors or 0,
                         cpus_per_worker=cpus_per_actor,
                         gpus_per_worker=-1.0 if gpus_per_actor is None else float(gpus_per_actor), num_cpus=num_cpus)
    started = connect(opts)
    try:
        quiet_data_context(ray)
        n_actors, gpus = plan_workers(opts, ray.cluster_resources())
        n_actors = max(1, min(n_actors, (len(items) + batch_size - 1) // max(1, batch_size)))
        try:
            compute = ray.data.ActorPoolStrategy(size=n_actors)
        except TypeError:  # older Ray Data: min_size/max_size only
            compute = ray.data.ActorPoolStrategy(min_size=n_actors, max_size=n_actors)
        ds = ray.data.from_items(_drop_empty_columns(items)).map_batches(
            worker_cls, fn_constructor_args=ctor_args, batch_size=max(1, batch_size), batch_format="numpy",
            num_cpus=cpus_per_actor, num_gpus=gpus, compute=compute)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            on_batch(batch)
    finally:
        if started:
            ray.shutdown()


__all__ = ["ENGINES", "optional", "to_columns", "from_columns", "result_columns", "iter_results", "run_local", "run_ray"]
