"""Training items for the engine: every item is {"global": view, "local": view, "label": 0/1}.

    ImageViews     decoded images in memory; views drawn by `views.make_view` per item and epoch
                   (pixels for a ViT trained from scratch)
    NativeCrops    regions of decoded images kept at native resolution; each item one native view
                   (a low-level expert's training crop) and its label
    FeatureViews   a frozen backbone's features of a few precomputed views per image; each epoch
                   picks one global and one local view per image (an adapter trains in seconds)
    view_features  those precomputed features, through the feature cache (a second run reads them)
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image

from ..data.samples import Sample
from ..images import DEFAULT_LIMITS, ImageError, decode_image_with_hash
from .views import NativeViewConfig, ViewConfig, make_view, native_view, random_crop, to_array


def decode_samples(samples: Sequence[Sample], workers: int = 2) -> tuple[list[Image.Image | None], list[str | None]]:
    """(RGB images, sha256) per sample; None for images that cannot be read."""
    def one(s: Sample):
        try:
            img, sha = decode_image_with_hash(s.data if s.data is not None else s.path, DEFAULT_LIMITS, name=s.path)
            img = img.convert("RGB")
            img.load()
            return img, sha
        except ImageError:
            return None, None
    with ThreadPoolExecutor(max(1, workers)) as pool:
        out = list(pool.map(one, samples))
    return [o[0] for o in out], [o[1] for o in out]


class ImageViews:
    """One global and one local view of image i, drawn from the generator the engine passes; with
    `image_term`, also CoDE's "clean" image (resized to the global view's size, nothing else) and an
    "augmented" one (a second, independent global view)."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], global_view: ViewConfig,
                 local_view: ViewConfig, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_term: bool = False):
        self.images, self.labels = list(images), np.asarray(labels, np.int64)
        self.views = {"global": global_view, "local": local_view}
        if image_term:
            self.views["augmented"] = global_view
        self.clean_size = global_view.out_size if image_term else None
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.images)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        img = self.images[index]
        out = {name: to_array(make_view(img, rng, cfg), self.mean, self.std) for name, cfg in self.views.items()}
        if self.clean_size is not None:
            out["clean"] = to_array(img.resize((self.clean_size, self.clean_size), Image.BICUBIC), self.mean, self.std)
        out["label"] = self.labels[index]
        return out


class NativeCrops:
    """For a low-level expert: each image is decoded once at full resolution and only a `region`-px
    square of it kept (placed by the image's own hash, so memory stays small whatever the photo's
    size); every epoch draws a fresh native view of that region. Images whose shorter side is under
    `min_side` are left out (counted in `too_small`; unreadable ones in `unreadable`): they cannot hold a native crop, and upscaling
    them would teach the expert the upscaler's traces."""

    def __init__(self, samples: Sequence[Sample], view: NativeViewConfig, region: int = 256, seed: int = 0,
                 workers: int = 2, thumbnail: bool = False, min_side: int = 0):
        # thumbnail: keep the whole image squashed to the view's size instead (an expert for small images)
        def one(s: Sample):
            try:
                img, sha = decode_image_with_hash(s.data if s.data is not None else s.path, DEFAULT_LIMITS, name=s.path)
            except ImageError:
                return None
            if min(img.size) < min_side:
                return "too small"
            img = img.convert("RGB")
            if thumbnail:
                return img.resize((view.size, view.size), Image.BICUBIC)
            rng = np.random.default_rng([int(sha[:15], 16), seed])
            return random_crop(img, rng, min(region, *img.size)).copy()
        with ThreadPoolExecutor(max(1, workers)) as pool:
            regions = list(pool.map(one, samples))
        self.too_small = sum(isinstance(r, str) for r in regions)
        self.unreadable = sum(r is None for r in regions)
        kept = [i for i, r in enumerate(regions) if isinstance(r, Image.Image)]
        self.images = [regions[i] for i in kept]
        self.labels = np.asarray([samples[i].label for i in kept], np.int64)
        self.view = view

    def __len__(self) -> int:
        return len(self.images)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        return {"global": to_array(native_view(self.images[index], rng, self.view)), "label": self.labels[index]}


class FeatureViews:
    """features[name]: (n, V, D) frozen features of V views per image; an item picks one per name.
    With `image_term`, also CoDE's "clean" (global view 0, the clean image) and "augmented" (one of
    the other global views; view 0 when there is no other)."""

    def __init__(self, features: dict[str, np.ndarray], labels: Sequence[int], image_term: bool = False):
        self.features, self.labels = features, np.asarray(labels, np.int64)
        self.image_term = image_term

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        out = {name: F[index, int(rng.integers(F.shape[1]))] for name, F in self.features.items()}
        if self.image_term:
            G = self.features["global"]
            out["clean"] = G[index, 0]
            out["augmented"] = G[index, int(rng.integers(1, G.shape[1])) if G.shape[1] > 1 else 0]
        out["label"] = self.labels[index]
        return out


def view_seed(sha: str, view: int, cfg: ViewConfig, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(sha[:15], 16), int(view), int(cfg.signature(), 16), int(seed)])


def view_key(sha: str, view: int, cfg: ViewConfig, seed: int, include_clean: bool) -> str:
    if include_clean and view == 0:
        return sha  # the clean image: the same cache row every other fakescope command uses
    return f"{sha}:tv{view}:{cfg.signature()}:{seed}"


def view_features(samples: Sequence[Sample], backbone, cache, cfg: ViewConfig, n_views: int, seed: int = 0,
                  include_clean: bool = False, flush_every: int = 512, workers: int = 2,
                  desc: str = "view features") -> tuple[np.ndarray, np.ndarray]:
    """(F, ok): F (n, n_views, D) the backbone's features of n_views views of every sample (view 0 the
    clean image if include_clean), ok (n,) False where the image could not be read, a view of it not made,
    or the backbone failed on it alone (its rows are 0).
    Views are seeded by the image's content hash, so cached rows are reused by any later run."""
    from ..backbones import preferred_batch_size, preprocess
    from ..features import sha_of, feature_vector
    from ..pipeline import Item, run_isolating, stack
    from ..progress import progress

    spec = backbone.spec
    shas = [sha_of(s) for s in samples]
    keys = {(i, v): view_key(sha, v, cfg, seed, include_clean) for i, sha in enumerate(shas) if sha
            for v in range(n_views)}
    todo = sorted({i for (i, v), k in keys.items() if cache is None or k not in cache})
    computed: dict[str, np.ndarray] = {}
    ok = np.array([sha is not None for sha in shas])

    def prepare(i: int):
        s = samples[i]
        try:
            img, sha = decode_image_with_hash(s.data if s.data is not None else s.path, DEFAULT_LIMITS, name=s.path)
        except ImageError:
            return i, None
        img = img.convert("RGB")
        arrays = []
        try:
            for v in range(n_views):
                if cache is not None and keys[(i, v)] in cache:
                    continue
                view = img if (include_clean and v == 0) else make_view(img, view_seed(sha, v, cfg, seed), cfg)
                arrays.append(Item(samples[i], v, sha, preprocess(view, spec)))
        except Exception:  # a view that cannot be made costs this image only
            return i, None
        return i, arrays

    pending: list[Item] = []
    owner: dict[int, int] = {}  # id(item) -> its sample's index
    out_k, out_x = [], []
    bs = preferred_batch_size(backbone)

    def forward(batch: list[Item]) -> np.ndarray:
        return feature_vector(backbone.forward(stack(batch)), spec)

    def flush_batch():
        # an input the backbone fails on alone drops its image, not the batch (pipeline.run_isolating)
        for done, rows in run_isolating(forward, pending, spec) if pending else []:
            for it, r in zip(done, rows):
                k = keys[(owner[id(it)], it.view)]
                computed[k] = r
                out_k.append(k)
                out_x.append(r)
        for it in pending:
            if not it.ok:
                ok[owner[id(it)]] = False
        pending.clear()
        owner.clear()

    with ThreadPoolExecutor(max(1, workers)) as pool, progress(total=len(todo), desc=desc) as bar:
        for i, arrays in pool.map(prepare, todo):
            bar.update(1)
            if arrays is None:
                ok[i] = False
                continue
            pending.extend(arrays)
            owner.update((id(it), i) for it in arrays)
            if len(pending) >= bs:
                flush_batch()
            if cache is not None and len(out_k) >= flush_every:
                cache.put(out_k, np.stack(out_x))
                out_k, out_x = [], []
        flush_batch()
    if cache is not None and out_k:
        cache.put(out_k, np.stack(out_x))
    need = [k for (i, v), k in sorted(keys.items()) if ok[i] and k not in computed]
    from_cache = dict(zip(need, cache.get(need))) if need else {}
    dim = next(iter(computed.values())).shape[0] if computed else (next(iter(from_cache.values())).shape[0] if from_cache else 0)
    F = np.zeros((len(samples), n_views, dim), np.float32)
    for (i, v), k in keys.items():
        if ok[i]:
            F[i, v] = computed[k] if k in computed else from_cache[k]
    return F, ok


def content_digest(samples: Sequence[Sample]) -> str:
    """A short id of a training set (its paths in order), recorded with checkpoints."""
    return hashlib.sha256("\n".join(s.path for s in samples).encode()).hexdigest()[:16]


__all__ = ["FeatureViews", "ImageViews", "content_digest", "decode_samples", "view_features"]
