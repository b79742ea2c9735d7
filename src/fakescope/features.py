"""On-disk feature cache: content hash x backbone signature x view -> embedding.

Layout (one folder per backbone signature, so two preprocessings never mix):

    CACHE/<spec.signature()>/manifest.json         the spec that made these features
    CACHE/<spec.signature()>/shard-<time>-<n>.safetensors   rows + their keys in the header

Each shard is written to a temporary name and renamed, so a killed extraction
leaves only complete shards; the next run finds their keys and computes the rest.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from .backbones import Backbone, BackboneSpec, preferred_batch_size
from .backbones.spec import feature_vector  # noqa: F401 (the head's input; detector, scale and training import it here)
from .data.augment import AugmentConfig
from .data.samples import Sample
from .files import atomic_write, replacing
from .pipeline import batched, iter_items, run_isolating, stack
from .progress import progress

DEFAULT_CACHE = Path(os.environ.get("FAKESCOPE_CACHE", Path.home() / ".cache" / "fakescope" / "features"))


MODALITIES = ("image", "text", "both")


def head_input(image: np.ndarray | None, text: np.ndarray | None, modality: str = "image") -> np.ndarray:
    """What a head reads: image features, caption features, or both side by side."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    if modality != "image" and text is None:
        raise ValueError(f"modality {modality!r} needs caption features (a text encoder and a caption per image)")
    parts = {"image": [image], "text": [text], "both": [image, text]}[modality]
    return np.concatenate(parts, axis=1).astype(np.float32) if len(parts) > 1 else parts[0].astype(np.float32)


def view_key(sha256: str, view: int, augment: AugmentConfig | None) -> str:
    return sha256 if view == 0 else f"{sha256}:v{view}:{(augment or AugmentConfig()).signature()}"


class FeatureCache:
    def __init__(self, root: str | Path, spec: BackboneSpec):
        self.root = Path(root)
        self.dir = self.root / spec.signature()
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            atomic_write(manifest, json.dumps({"spec": asdict(spec)}, indent=1).encode())
        self._index: dict[str, tuple[Path, int]] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), "numpy") as f:
                for row, key in enumerate(json.loads(f.metadata()["keys"])):
                    self._index[key] = (shard, row)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            shard, row = self._index[k]
            by_shard.setdefault(shard, []).append((i, row))
        out: np.ndarray | None = None
        for shard, pairs in by_shard.items():
            with safe_open(str(shard), "numpy") as f:
                rows = f.get_tensor("features")
            if out is None:
                out = np.empty((len(keys), rows.shape[1]), np.float32)
            idx, rr = zip(*pairs)
            out[list(idx)] = rows[list(rr)]
        return out if out is not None else np.empty((0, 0), np.float32)

    def put(self, keys: Sequence[str], rows: np.ndarray) -> None:
        if not len(keys):
            return
        digest = hashlib.sha1("".join(keys).encode()).hexdigest()[:8]
        shard = self.dir / f"shard-{time.time_ns()}-{digest}.safetensors"
        with replacing(shard) as tmp:
            save_file({"features": np.ascontiguousarray(rows, np.float32)}, str(tmp), metadata={"keys": json.dumps(list(keys))})
        for row, k in enumerate(keys):
            self._index[k] = (shard, row)


def sha_of(sample: Sample) -> str | None:
    try:
        data = sample.data if sample.data is not None else Path(sample.path).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()


def extract(samples: Sequence[Sample], backbone: Backbone, cache: FeatureCache | None = None,
            views: Sequence[int] = (0,), augment: AugmentConfig | None = None, batch_size: int | None = None,
            flush_every: int = 512, desc: str = "features") -> tuple[list[tuple[int, int]], np.ndarray, list[tuple[str, str]]]:
    """Features for every (sample, view), read from the cache where present.

    Returns (rows, X, errors): rows[i] = (sample index, view) of X[i]; errors = [(path, message)].
    Cache shards are flushed every `flush_every` rows, so an interrupted run keeps its work. An image
    the backbone fails on alone is an error, not the end of the run (pipeline.run_isolating).
    """
    spec = backbone.spec
    if spec.kind == "fusion":  # part by part, each through its own cache rows (a refit expert reuses the others')
        return _extract_parts(samples, backbone, cache, views, augment, batch_size, flush_every, desc)
    keys: dict[tuple[int, int], str] = {}
    missing: dict[tuple[int, ...], list[int]] = {}  # views still to compute -> the samples missing exactly those
    for i, s in enumerate(samples):
        sha = sha_of(s) if cache is not None else None
        cached = {v: k for v in views if sha and (k := view_key(sha, v, augment)) in cache}
        keys.update({(i, v): k for v, k in cached.items()})
        todo_views = tuple(v for v in views if v not in cached)
        if todo_views:  # only the views not cached are computed (adding a view keeps the clean one's work)
            missing.setdefault(todo_views, []).append(i)
    computed: dict[str, np.ndarray] = {}
    errors: list[tuple[str, str]] = []
    failed: set[int] = set()
    pending_keys: list[str] = []
    pending_rows: list[np.ndarray] = []

    def forward(batch: list) -> np.ndarray:
        return feature_vector(backbone.forward(stack(batch)), spec)

    with progress(total=sum(len(idx) * len(vs) for vs, idx in missing.items()), desc=desc) as bar:
        for todo_views, todo in missing.items():
            index_of: dict[int, list[int]] = {}  # a Sample object listed twice fills both rows
            for i in todo:
                index_of.setdefault(id(samples[i]), []).append(i)
            items = iter_items((samples[i] for i in todo), spec, views=todo_views, augment=augment)
            for batch in batched(items, batch_size or preferred_batch_size(backbone)):
                ok = [it for it in batch if it.ok]
                passed = run_isolating(forward, ok, spec) if ok else []
                for it in batch:  # not read, or the model failed on it alone: one error per image, however many views
                    if not it.ok:
                        if not failed.intersection(index_of[id(it.sample)]):
                            errors.append((it.sample.path, it.error))
                        failed.update(index_of[id(it.sample)])
                for done, rows in passed:
                    for it, row in zip(done, rows):
                        k = view_key(it.sha256, it.view, augment)
                        for i in index_of[id(it.sample)]:
                            keys[(i, it.view)] = k
                        computed[k] = row
                        pending_keys.append(k)
                        pending_rows.append(row)
                if cache is not None and len(pending_keys) >= flush_every:
                    cache.put(pending_keys, np.stack(pending_rows))
                    pending_keys, pending_rows = [], []
                bar.update(len(batch))
    for i in failed:  # an image is all its views or none: a half-read image is no row at all
        for v in views:
            keys.pop((i, v), None)
    if cache is not None and pending_keys:
        cache.put(pending_keys, np.stack(pending_rows))
    order = sorted(keys)
    cached = [keys[r] for r in order if keys[r] not in computed]
    from_cache = dict(zip(cached, cache.get(cached))) if cached else {}
    X = np.stack([computed[keys[r]] if keys[r] in computed else from_cache[keys[r]] for r in order]) if order \
        else np.empty((0, 0), np.float32)
    return order, X, errors


def _extract_parts(samples, backbone, cache, views, augment, batch_size, flush_every, desc):
    """A fusion's rows: each part's features (its own cache), side by side; a sample failing in any
    part fails as a whole (the fused head needs every part)."""
    per_part, failed = [], {}
    for part in backbone.parts:
        part_cache = FeatureCache(cache.root, part.spec) if cache is not None else None
        rows, X, errors = extract(samples, part, part_cache, views, augment, batch_size, flush_every,
                                  f"{desc} ({part.spec.name})")
        per_part.append(dict(zip(rows, X)))
        failed.update(dict(errors))
    order = sorted(set.intersection(*(set(p) for p in per_part)))
    X = np.stack([np.concatenate([p[r] for p in per_part]) for r in order]) if order else np.empty((0, 0), np.float32)
    return order, X, list(failed.items())
