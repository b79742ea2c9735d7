"""Scan and feature jobs on either engine, resumable shard by shard.

    run_parts_job   inputs -> shards -> the engine -> one Parquet part per finished shard
                    (`outputs.PartStore`); a re-run computes only the shards without a part
    scan_job        run_parts_job with ScoreBatch (what `fakescope scan --out DIR` runs)
    scan_to_jsonl   scan records into a JSONL results file, resumed: inputs it already holds are
                    not scored again (what `fakescope scan --out x.jsonl` runs)
    features_job    run_parts_job with EmbedBatch, then the parts go into the feature cache
                    (what `fakescope features` runs)

Exactly once: the driver is the only writer; rows are regrouped by (shard, pos) and a row
seen twice (a retried Ray task) is dropped; a shard's part is written once, when all its
rows are in; part files are renamed into place, so a killed run leaves whole parts only.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import __version__
from ..images import ImageLimits
from . import engines
from .batch import EmbedBatch, ScoreBatch, samples_of
from .engines import EngineOptions
from .inputs import Inputs, Shard, inputs_digest, plan_shards
from .outputs import PartStore, fsync_write, register_features

DEFAULT_SHARD_SIZE = 1000


@dataclass
class JobResult:
    out: Path
    n_inputs: int
    n_shards: int
    skipped: list[int] = field(default_factory=list)    # shards already complete before this run
    written: list[int] = field(default_factory=list)    # shards this run wrote
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    cached: int = 0                                      # feature rows added to the feature cache


def _regroup(outputs: Iterator[dict[str, np.ndarray]], shards: dict[int, Shard],
             on_rows: Callable[[int], None] | None = None) -> Iterator[tuple[Shard, dict[str, np.ndarray]]]:
    """Output batches (any order, any mix of shards) -> (shard, its columns in input order), once each."""
    parts: dict[int, list[dict[str, np.ndarray]]] = {}
    seen: dict[int, set[int]] = {}
    for out in outputs:
        shard_col = np.asarray(out["shard"], np.int64)
        pos_col = np.asarray(out["pos"], np.int64)
        for index in np.unique(shard_col):
            index = int(index)
            if index not in shards:  # not ours, or already written (a late duplicate)
                continue
            got = seen.setdefault(index, set())
            sel = [i for i in np.flatnonzero(shard_col == index) if int(pos_col[i]) not in got]
            if not sel:
                continue
            got.update(int(pos_col[i]) for i in sel)
            parts.setdefault(index, []).append({k: np.asarray(v)[sel] for k, v in out.items()})
            if on_rows:
                on_rows(len(sel))
            sh = shards[index]
            if len(got) == len(sh):
                chunks = parts.pop(index)
                del seen[index]
                cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
                order = np.argsort(cols["pos"], kind="stable")
                yield sh, {k: v[order] for k, v in cols.items() if k not in ("shard", "pos")}
                shards.pop(index)
    if shards:
        missing = sorted(shards)[:5]
        raise RuntimeError(f"the engine returned incomplete results for {len(shards)} shard(s), e.g. {missing}")


def run_parts_job(kind: str, fn_cls: type, fn_kwargs: dict[str, Any], inputs: Inputs, out: str | Path,
                  config: dict, opts: EngineOptions, shard_size: int = DEFAULT_SHARD_SIZE, extra: dict | None = None,
                  on_part: Callable[[Path], None] | None = None, progress_desc: str | None = None,
                  files: dict[str, bytes] | None = None, log: Callable[[str], None] | None = None,
                  on_rows: Callable[[int], None] | None = None) -> JobResult:
    from ..progress import progress

    t0 = time.perf_counter()
    digest = inputs_digest(inputs)
    shards = plan_shards(len(inputs), shard_size, digest)
    job = {"kind": kind, "inputs_sha256": digest, "n_inputs": len(inputs), "shard_size": shard_size,
           "n_shards": len(shards), "config": config, "fakescope": __version__,
           "shard_ids": [s.id for s in shards], **(extra or {})}
    with PartStore(out, job) as store:
        for name, data in (files or {}).items():  # e.g. the feature cache manifest, once the folder is ours
            if not (store.dir / name).exists():
                fsync_write(store.dir / name, data)
        done = store.completed()
        pending = [s for s in shards if s.index not in done]
        result = JobResult(Path(out), len(inputs), len(shards), skipped=sorted(done), timings=opts.timings)
        if done and log:
            log(f"resuming: {len(done)} of {len(shards)} shards already complete in {out}")
        with progress(total=sum(len(s) for s in pending), desc=progress_desc or kind) as bar:
            def rows_in(n: int) -> None:
                bar.update(n)
                if on_rows:
                    on_rows(n)

            outputs = engines.run(fn_cls, fn_kwargs, inputs, pending, opts) if pending else iter(())
            for sh, cols in _regroup(outputs, {s.index: s for s in pending}, rows_in):
                path = store.write(sh.index, cols)
                result.written.append(sh.index)
                if on_part:
                    on_part(path)
    result.seconds = time.perf_counter() - t0
    return result


def scan_job(inputs: Inputs, out: str | Path, model: str | None = None, opts: EngineOptions | None = None,
             limits: ImageLimits | None = None, batch_size: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
             fn_cls: type = ScoreBatch, log: Callable[[str], None] | None = None,
             on_rows: Callable[[int], None] | None = None, abstain: bool = True,
             threshold: float | None = None, score_options: dict | None = None) -> JobResult:
    """Score `inputs` with a detector into Parquet parts under `out` (`abstain=False`: no "uncertain";
    `threshold`: this run's threshold instead of the model's, recorded in the job and every row;
    `score_options`: ScoreBatch's `provenance` and `video`, part of the job's identity when given)."""
    from ..detector import load_detector

    model = _resolve(model)
    det = load_detector(model)  # fails here, not in every worker, when the folder is wrong
    kwargs = {"model": model, "batch_size": batch_size, "limits": asdict(limits or ImageLimits()), "abstain": abstain,
              "threshold": threshold, **(score_options or {})}
    config = {"model": det.id, "model_version": det.version,
              "threshold": det.threshold if threshold is None else float(threshold)}
    if score_options:  # another provenance mode or frame sampling is another job
        config["options"] = score_options
    return run_parts_job("scan", fn_cls, kwargs, inputs, out, config, opts or EngineOptions(), shard_size,
                         progress_desc="scan", log=log, on_rows=on_rows)


def iter_scan_records(inputs: Inputs, model: str | None = None, opts: EngineOptions | None = None,
                      limits: ImageLimits | None = None, batch_size: int | None = None,
                      chunk: int = DEFAULT_SHARD_SIZE, fn_cls: type = ScoreBatch,
                      abstain: bool = True, threshold: float | None = None,
                      score_options: dict | None = None) -> Iterator[list[dict]]:
    """Scan records batch by batch as the engine returns them (input order on the local engine),
    each input once: what `fakescope scan --out x.jsonl` appends."""
    from .outputs import scan_records

    kwargs = {"model": _resolve(model), "batch_size": batch_size, "limits": asdict(limits or ImageLimits()),
              "abstain": abstain, "threshold": threshold, **(score_options or {})}
    seen: set[tuple[int, int]] = set()
    for cols in engines.run(fn_cls, kwargs, inputs, plan_shards(len(inputs), chunk, ""), opts or EngineOptions()):
        keys = list(zip(np.asarray(cols["shard"]).tolist(), np.asarray(cols["pos"]).tolist()))
        keep = [i for i, k in enumerate(keys) if k not in seen]
        seen.update(keys)
        if keep:
            yield scan_records({k: np.asarray(v)[keep] for k, v in cols.items()})


def scan_to_jsonl(inputs: Inputs, sink, model_id: str, model_version: str, model: str | None = None,
                  opts: EngineOptions | None = None, limits: ImageLimits | None = None,
                  batch_size: int | None = None, chunk: int = DEFAULT_SHARD_SIZE, *, require: str | None = None,
                  given: Sequence[str] = (), enrich: Callable[[list[dict]], None] | None = None,
                  log: Callable[[str], None] = print, **score_kwargs) -> list[dict]:
    """Every input's scan record, in input order, written to `sink` as JSON lines batch by batch.

    `sink`: an `outputs.ResultsFile` (resumed: the records of this model (`model_id`,
    `model_version`) it already holds are returned, not scored again; failed ones, and ones
    without the key `require`, are scored again), an `outputs.ResultsStream`, or None (records
    only). `given`: the user's input arguments, which the file must not be. `enrich(records,
    sources=...)` may add to each batch's records before they are written (e.g. localisation maps);
    `sources` are the records' inputs as Samples, a tar member's bytes read (or a failed Item).
    `score_kwargs` go to `iter_scan_records` (abstain, threshold, score_options)."""
    from ..progress import progress

    files = inputs.paths
    done = sink.open(model_id, model_version, require, given) if sink else {}
    try:
        todo = [i for i, f in enumerate(files) if f not in done]
        if done:
            log(f"resuming: {len(files) - len(todo)} of {len(files)} already scored in {getattr(sink, 'path', '')}")
        for other, n in getattr(sink, "others", {}).items():  # a results file shared by model versions
            log(f"note: {getattr(sink, 'path', '')} also holds {n} records of {other}, kept as they are; "
                f"this model's ({model_id}@{model_version}) are written after them (tell them apart by model_version)")
        results = [done[f] for f in files if f in done]
        with progress(total=len(todo), desc="scan") as bar:
            rows = inputs.take(todo)
            row_of: dict[str, int] = {}
            for k, f in enumerate(rows.paths if enrich is not None else ()):  # only enrich reads them
                row_of.setdefault(f, k)
            for recs in iter_scan_records(rows, model, opts, limits, batch_size, chunk, **score_kwargs):
                if enrich is not None:  # each record's own input: a tar member is no file to open by its path
                    enrich(recs, sources=[samples_of(rows.batch(row_of[r["path"]], row_of[r["path"]] + 1),
                                                     limits or ImageLimits())[0] for r in recs])
                if sink:
                    sink.append(recs)
                results += recs
                bar.update(len(recs))
    finally:
        if sink:
            sink.close()
    order = {f: i for i, f in enumerate(files)}
    results.sort(key=lambda r: order.get(r["path"], 0))
    return results


def features_job(inputs: Inputs, out: str | Path, backbone: str = "effnet-lite0", cache: str | Path | None = None,
                 opts: EngineOptions | None = None, limits: ImageLimits | None = None, batch_size: int | None = None,
                 shard_size: int = DEFAULT_SHARD_SIZE, fn_cls: type = EmbedBatch,
                 log: Callable[[str], None] | None = None) -> JobResult:
    """Backbone features of `inputs` into Parquet parts under `out` (+ `manifest.json`, the feature
    cache's manifest); with `cache`, every finished part is also added to that feature cache."""
    from ..backbones import parse_spec

    spec = parse_spec(backbone)
    kwargs = {"backbone": backbone, "batch_size": batch_size, "limits": asdict(limits or ImageLimits())}
    config = {"backbone": spec.name, "signature": spec.signature()}
    out = Path(out)
    added = [0]

    def on_part(path: Path) -> None:
        if cache is not None:
            added[0] += register_features(out, cache, [path])

    manifest = (json.dumps({"spec": asdict(spec)}, indent=1)).encode()
    res = run_parts_job("features", fn_cls, kwargs, inputs, out, config, opts or EngineOptions(), shard_size,
                        on_part=on_part, progress_desc="features", files={"manifest.json": manifest}, log=log)
    if cache is not None and res.skipped:  # parts of an earlier run (maybe for another cache): make sure they are in
        added[0] += register_features(out, cache, [out / f"part-{i:05d}.parquet" for i in res.skipped])
    res.cached = added[0]
    return res


def _resolve(model: str | None) -> str | None:
    """A model folder given relative to here, made absolute (workers may start elsewhere); a shipped
    model's name (or None) is passed on as it is."""
    if model in (None, ""):
        return None
    p = Path(model)
    return str(p.resolve()) if p.exists() else model
