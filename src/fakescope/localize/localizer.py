"""Localizer = frozen backbone(s) + ConvDecoder: where in an image was it generated or edited?

    loc = Localizer(LocalizerConfig(backbone="vit-s14-focus?resize=resize&patch_layer=8", epochs=20))
    info = loc.fit([(path, mask_uint8), (real_path, None), ...], val_pairs=...)
    maps = loc.predict_maps([path])          # float32 (H, W) in [0, 1] at each image's own size
    loc.save("runs/loc"); Localizer.load("runs/loc")

Training pairs are (image, mask): the image as a path, bytes, PIL image or uint8 array; the
mask as an (H, W) array (or PIL image) of the decoded image's size, or None for a real image
(all zeros). Integer masks are binarised (> 127 when they use the 0..255 range, else > 0);
float masks in [0, 1] are used as soft targets.

Geometry. The image goes through the backbone's own preprocessing (`spec.resize`,
`spec.input_size`) and the mask through `preprocess_mask`, the same resize (area filter,
so a target pixel is the manipulated fraction under it) and the same crop: target pixel
(i, j) covers exactly the input pixel (i, j). Images are decoded at full resolution (no
JPEG draft decoding, unlike detection) so the original size is known exactly; EXIF
orientation is applied, so masks must be given in the displayed orientation.

Back to the original size (`restore_map`). The decoder predicts an input_size x input_size
map of the preprocessed input. It is placed where that input came from and resized
(bilinear) to the original image:
    resize       the map covers the whole image (stretched back): every pixel is predicted.
                 This is the recommended policy for localisation, hence the default spec.
    resize_crop  the map covers the centre crop; pixels outside it were never seen.
    native_crop  same, at native resolution: usually a small central window of a photo.
Unseen pixels get `outside`: "mean" (default: the map's mean, an uninformative value that
neither raises nor hides a region), "nan" (explicitly unknown), or a number.

Frozen backbone. The backbone is never trained. `fit` runs it once per image and keeps the
patch grids in memory (float16 unless a value overflows it, then float32): about
h*w*C*2 bytes per image (ViT-S/14 at 224: 16*16*384*2 = 196 KB, so 10k images ~ 2 GB),
plus the uint8 targets (input_size^2 bytes). Decoder epochs then cost only the decoder.
No augmentation happens (features are computed once); add views as extra pairs if needed.
With `cache_dir` set, grids are also kept on disk (the feature cache's shards, keyed by the
image bytes' SHA-256 and the patch layer), so a second fit on the same images (another
decoder width, more epochs) skips the backbone. Images given as PIL/arrays are not cached.

Loss: pixel-wise BCE on logits, optionally class-balanced (both pixel classes weigh half,
from the manipulated fraction of the training targets) or with a fixed `pos_weight`;
AdamW. With val_pairs, the epoch with the best pixel ROC-AUC (or the lowest val loss, or
when val has only one pixel class) is kept; without, the last epoch.

Saved as LOCALIZER_DIR/localizer.json (format "fakescope.localizer/1": specs, config,
decoder architecture, threshold, metadata) + decoder.safetensors. Never pickle.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from ..errors import ModelFolderError
from ..saving import finite_number, load_model_dir, save_model_dir
from torch.nn import functional as F

from ..backbones import Backbone, BackboneSpec, load_backbone, parse_spec, preferred_batch_size, preprocess
from ..backbones.spec import fit_geometry, model_backbone_spec
from ..evaluation.metrics import roc_auc
from ..images import DEFAULT_LIMITS, ImageLimits, decode_image, sha256_hex
from . import tiles
from .decoder import PRESETS as DECODER_PRESETS, ConvDecoder

FORMAT = "fakescope.localizer/1"
ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
MaskSource = Union[np.ndarray, Image.Image, None]
_AUC_PIXELS = 1_000_000  # validation AUC reads at most this many pixels (a fixed random subset)


@dataclass
class LocalizerConfig:
    backbone: str = "vit-s14-focus?resize=resize"  # spec whose patch grid the decoder reads; add &patch_layer=K
    blocks: list[int] | None = None     # read these blocks' token grids (numbered as patch_layer) from one forward,
                                        #   concatenated on channels (ONNX token backbones: clip-b16, vit-s14-focus)
    second_backbone: str | None = None  # optional second grid (DeCLIP: a ResNet layer), resized to the first
                                        # grid and concatenated; needs the same input_size and resize policy
    width: int = 256                    # decoder channels of the first stage (halved per stage, floor 16)
    stages: int | None = None           # conv + x2 upsample stages; None: enough to reach input_size / 2
    decoder: str = "fakescope"          # decoder.PRESETS: fakescope (1 Conv3x3 per stage) or declip-conv20
                                        #   (DeCLIP's: 4 stages of 5 Conv5x5, widths 512..64; width/stages unused)
    lr: float = 1e-3                    # AdamW learning rate
    weight_decay: float = 1e-4          # AdamW weight decay
    epochs: int = 20                    # passes over the training pairs
    batch_size: int = 16                # images per decoder step
    balanced: bool = False              # class-balanced BCE (manipulated and clean pixels weigh half each)
    pos_weight: float | None = None     # or a fixed BCE weight of manipulated pixels (not with balanced)
    select: str = "auc"                 # best epoch on val_pairs by pixel "auc" or "loss"
    seed: int = 0                       # decoder init and batch order
    read: str = "whole"                 # "whole": the image as the spec reads it; "tiles": input_size windows at
                                        #   native resolution every tile_stride px, maps averaged (tiles.py)
    tile_stride: int = 112
    tile_max_side: int | None = 1024    # read="tiles": a larger image is first shrunk to this longest side (cost bound)
    solver: str = "adamw"               # "ridge": a linear decoder (stages=0) fitted in closed form (fit_grids)
    ridge_lambda: float = 100.0         # ridge: penalty, in units of 1/1000 of each feature's mean square x rows
    ridge_slope: float = 8.0            # ridge: logit = slope x (prediction - cut): the map's steepness
    target_size: int | None = None      # train on targets area-shrunk to this side (None: input_size): the loss
                                        #   and the decoder's last stages cost ~(side)^2; maps are still input_size
    # The mask resolution is the backbone's input_size: targets and predictions are input_size^2.

    def check(self) -> None:
        if self.balanced and self.pos_weight is not None:
            raise ValueError("use either balanced=True or pos_weight, not both")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise ValueError("pos_weight must be positive")
        if self.select not in ("auc", "loss"):
            raise ValueError(f"select must be 'auc' or 'loss', not {self.select!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.width < 1:
            raise ValueError("epochs, batch_size and width must be >= 1")
        if self.stages is not None and self.stages < 0:
            raise ValueError("stages must be >= 0")
        if self.blocks is not None and (not self.blocks or any(int(k) == 0 for k in self.blocks)):
            raise ValueError(f"blocks must be non-zero block numbers, got {self.blocks}")
        if self.read not in ("whole", "tiles") or self.tile_stride < 1:
            raise ValueError(f"read must be 'whole' or 'tiles' and tile_stride >= 1, not {self.read!r} / {self.tile_stride}")
        if self.solver not in ("adamw", "ridge") or (self.solver == "ridge" and self.stages != 0):
            raise ValueError("solver must be 'adamw' or 'ridge'; ridge fits a linear decoder (stages=0)")
        if self.target_size is not None and self.target_size < 1:
            raise ValueError("target_size must be >= 1")
        if self.decoder not in DECODER_PRESETS:
            raise ValueError(f"decoder must be one of {', '.join(DECODER_PRESETS)}, not {self.decoder!r}")


# ------------------------------------------------------------------ geometry
def mask_array(mask: np.ndarray | Image.Image) -> np.ndarray:
    """A mask as float32 (H, W) in [0, 1]: integer masks binarised, float masks clipped, bool as is."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3, 4):  # a grey mask saved as RGB(A): first channel
        m = m[:, :, 0]
    if m.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {m.shape}")
    if m.dtype == bool:
        return m.astype(np.float32)
    if np.issubdtype(m.dtype, np.integer):
        return (m > 127 if m.max(initial=0) > 1 else m > 0).astype(np.float32)
    if np.issubdtype(m.dtype, np.floating):
        return np.clip(np.nan_to_num(m.astype(np.float32), nan=0.0), 0.0, 1.0)
    raise ValueError(f"unsupported mask dtype {m.dtype}")


def preprocess_mask(mask: np.ndarray | Image.Image, spec: BackboneSpec) -> np.ndarray:
    """(H, W) mask of an image -> float32 (input_size, input_size) in [0, 1], aligned with
    `preprocess(image, spec)`: the same resize (area filter, so each value is the manipulated
    fraction under that input pixel) and the same crop."""
    m = mask_array(mask)
    h, w = m.shape
    s = spec.input_size
    size, (left, top) = fit_geometry(w, h, spec)
    img = Image.fromarray(m)  # mode F
    if size != (w, h):
        img = img.resize(size, Image.BOX)
    out = np.asarray(img, dtype=np.float32)[top:top + s, left:left + s]
    return np.clip(out, 0.0, 1.0)


def restore_map(prob_map: np.ndarray, size: tuple[int, int], spec: BackboneSpec,
                outside: str | float = "mean") -> np.ndarray:
    """An (input_size, input_size) map of the preprocessed input -> float32 (H, W) map of the
    original image, size = (W, H). Pixels the crop left out get `outside` (module docstring)."""
    w, h = size
    s = spec.input_size
    m = np.asarray(prob_map, dtype=np.float32)
    if m.shape != (s, s):
        raise ValueError(f"expected a ({s}, {s}) map, got {m.shape}")
    if isinstance(outside, str) and outside not in ("mean", "nan"):
        raise ValueError(f"outside must be 'mean', 'nan' or a number, not {outside!r}")
    (rw, rh), (left, top) = fit_geometry(w, h, spec)
    covers_all = (rw, rh) == (s, s)
    if covers_all:
        canvas = m
    else:
        # "nan": fill with the mean first so the bilinear resize does not smear NaN into the crop
        fill = float(m.mean()) if outside in ("mean", "nan") else float(outside)
        canvas = np.full((rh, rw), fill, np.float32)
        canvas[top:top + s, left:left + s] = m
    out = canvas
    if canvas.shape != (h, w):
        out = np.asarray(Image.fromarray(canvas).resize((w, h), Image.BILINEAR), dtype=np.float32)
    out = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)  # a new, writable array
    if outside == "nan" and not covers_all:
        seen = np.zeros((rh, rw), np.uint8)
        seen[top:top + s, left:left + s] = 1
        if seen.shape != (h, w):
            seen = np.asarray(Image.fromarray(seen).resize((w, h), Image.NEAREST))
        out[seen == 0] = np.nan
    return out


def load_image(source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Any accepted image source -> RGB PIL image at full resolution (fakescope's decoder rules)."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError("image arrays must be HxW or HxWxC uint8")
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):
        if source.mode == "RGB":
            return source
        buf = io.BytesIO()
        source.save(buf, format="PNG")  # lossless; then the same mode conversions as files get
        return decode_image(buf.getvalue(), limits=limits, name="<image>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), limits=limits, name="<bytes>")
    return decode_image(source, limits=limits, name=str(source))


# ------------------------------------------------------------------ features
@dataclass
class _Prepared:
    grids: list[np.ndarray]            # per backbone: (N, C, h, w) float16 or float32, one row per view
    sizes: list[tuple[int, int]]       # original (W, H) per image
    targets: np.ndarray | None = None  # (N, s, s) uint8, manipulated fraction x 255, per view
    windows: list[list[tuple[int, int]]] | None = None  # read="tiles": per image, its windows' (left, top)
    tiled: list[tuple[int, int]] | None = None          # read="tiles": per image, (W, H) as tiled


class _GridStore:
    """Collects (n, C, h, w) batches in float16, switching to float32 if a value would overflow."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.dtype = np.float16

    def add(self, nhwc: np.ndarray) -> None:
        x = np.ascontiguousarray(np.asarray(nhwc, np.float32).transpose(0, 3, 1, 2))
        if self.dtype == np.float16 and np.abs(x).max(initial=0.0) > 60000.0:
            self.dtype = np.float32
            self.parts = [p.astype(np.float32) for p in self.parts]
        self.parts.append(x.astype(self.dtype))

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 0, 0, 0), self.dtype)


class _GridCache:
    """Patch grids of one backbone on disk: a FeatureCache of flattened (h, w, C) rows."""

    def __init__(self, root: str | Path, spec: BackboneSpec, blocks: Sequence[int] | None = None):
        from ..features import FeatureCache
        from ..files import atomic_write
        self._write = atomic_write
        self.cache = FeatureCache(root, spec)
        self.tag = f"grid:B{'-'.join(map(str, blocks))}" if blocks else f"grid:L{spec.patch_layer}"
        self.shape_file = self.cache.dir / f"{self.tag.replace(':', '-')}.json"
        self.shape = tuple(json.loads(self.shape_file.read_text())) if self.shape_file.exists() else None
        self.pending: dict[str, np.ndarray] = {}

    def key(self, sha: str | None) -> str | None:
        return f"{self.tag}:{sha}" if sha else None

    def __contains__(self, key: str | None) -> bool:
        return key is not None and self.shape is not None and (key in self.cache or key in self.pending)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        stored = [k for k in keys if k not in self.pending]
        rows = dict(zip(stored, self.cache.get(stored))) if stored else {}
        return np.stack([self.pending[k] if k in self.pending else rows[k].reshape(self.shape) for k in keys])

    def put(self, keys: Sequence[str | None], grids: np.ndarray, flush_at: int = 256) -> None:
        if self.shape is None:
            self.shape = tuple(int(d) for d in grids.shape[1:])
            self._write(self.shape_file, json.dumps(list(self.shape)).encode())
        self.pending.update({k: g for k, g in zip(keys, grids) if k is not None})
        if len(self.pending) >= flush_at:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            keys = list(self.pending)
            self.cache.put(keys, np.stack([self.pending[k].reshape(-1) for k in keys]))
            self.pending = {}


def _source_sha(source: ImageSource) -> str | None:
    """SHA-256 of the file bytes (paths, bytes), the cache key; None for in-memory images."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return sha256_hex(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            return sha256_hex(Path(source).read_bytes())
        except OSError:
            return None
    return None


def _shrink(targets: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, s, s) targets -> float32 (N, size, size) in [0, 1], area-averaged (the edited fraction)."""
    y = torch.from_numpy(np.asarray(targets)).float() / 255.0
    if y.shape[-1] == size:
        return y
    return F.interpolate(y[:, None], size=(size, size), mode="area")[:, 0]


def _image_rule(rule: Any, directory) -> dict | None:
    """A saved image_rule checked as data: a fraction in (0, 1] and a finite threshold, or None."""
    if rule is None:
        return None
    if not isinstance(rule, dict):
        raise ValueError("image_rule must be an object")
    fraction = finite_number(rule["fraction"], "image_rule.fraction", directory)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"image_rule.fraction must be in (0, 1], got {fraction}")
    return {**rule, "fraction": fraction, "threshold": finite_number(rule["threshold"], "image_rule.threshold", directory)}


def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


# ------------------------------------------------------------------ the model
@dataclass
class Localizer:
    config: LocalizerConfig = field(default_factory=LocalizerConfig)
    spec: BackboneSpec | None = None           # None: parsed from config.backbone
    second_spec: BackboneSpec | None = None    # None: parsed from config.second_backbone (if any)
    decoder: ConvDecoder | None = None         # built by fit (or load)
    threshold: float = 0.5                     # predict_masks: map >= threshold
    image_rule: dict | None = None             # {"fraction": f, "threshold": t[, "min_side": s]}: the image counts as
                                               #   edited when the mean of its map's top f share of pixels is >= t
                                               #   (edit_score), judged only on images whose shorter side is >= s
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: ImageLimits = DEFAULT_LIMITS
    cache_dir: str | Path | None = None         # keep patch grids on disk between fits (not saved)
    _backbones: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.config.check()
        if self.spec is None:
            self.spec = parse_spec(self.config.backbone)
        if self.config.blocks and self.spec.patch_layer is not None:
            raise ValueError("give either blocks or the backbone's ?patch_layer=, not both")
        if self.config.blocks and tuple(self.spec.layers) != tuple(int(k) for k in self.config.blocks):
            # the blocks become the spec's layers: the backbone then exposes their outputs
            self.spec = dataclasses.replace(self.spec, layers=tuple(int(k) for k in self.config.blocks))
        if self.second_spec is None and self.config.second_backbone:
            self.second_spec = parse_spec(self.config.second_backbone)
        if self.second_spec is not None:
            a, b = self.spec, self.second_spec
            if (a.input_size, a.resize) != (b.input_size, b.resize):
                raise ValueError(f"second backbone must see the same geometry: {b.name} has input_size "
                                 f"{b.input_size} / {b.resize}, {a.name} has {a.input_size} / {a.resize}")

    @property
    def specs(self) -> list[BackboneSpec]:
        return [self.spec] + ([self.second_spec] if self.second_spec is not None else [])

    def backbone(self, i: int = 0) -> Backbone:
        if i not in self._backbones:
            self._backbones[i] = load_backbone(self.specs[i])
        return self._backbones[i]

    # -------------------------------------------------------------- features
    @property
    def tiled(self) -> bool:
        return self.config.read == "tiles"

    def _views(self, img: Image.Image, mask: np.ndarray | None, want_target: bool):
        """(backbone inputs per view per spec, uint8 targets per view or None, windows, tiled size) of
        one image: the whole image as the spec reads it, or its native-resolution windows (tiles.py)."""
        s = self.spec.input_size
        if not self.tiled:
            target = None
            if want_target:
                target = (np.zeros((s, s), np.uint8) if mask is None
                          else np.round(preprocess_mask(mask, self.spec) * 255.0).astype(np.uint8))
            return [[preprocess(img, sp) for sp in self.specs]], [target], None, None
        wins, where, size = tiles.cut(img, s, self.config.tile_stride, self.config.tile_max_side)
        arrays = [[preprocess(w, sp) for sp in self.specs] for w in wins]
        targets: list = [None] * len(wins)
        if want_target:
            m = np.zeros((img.height, img.width), np.float32) if mask is None else mask_array(mask)
            targets = list(np.round(tiles.cut_mask(m, s, self.config.tile_stride, self.config.tile_max_side)
                                    * 255.0).astype(np.uint8))
        return arrays, targets, where, size

    def _prepare(self, images: Sequence[ImageSource], masks: Sequence[MaskSource] | None = None) -> _Prepared:
        specs = self.specs
        stores = [_GridStore() for _ in specs]
        sizes: list[tuple[int, int]] = []
        targets: list[np.ndarray] = []
        windows: list = []
        tiled_sizes: list = []
        caches = ([_GridCache(self.cache_dir, sp, self.config.blocks if j == 0 else None) for j, sp in enumerate(specs)]
                  if self.cache_dir else None)

        def load(i: int):
            sha = _source_sha(images[i]) if caches else None
            img = load_image(images[i], self.limits)
            m = None
            if masks is not None and masks[i] is not None:
                m = masks[i]
                shape = np.asarray(m).shape[:2]
                if shape != (img.height, img.width):
                    raise ValueError(f"image {i}: mask is {shape[1]}x{shape[0]}, image is "
                                     f"{img.width}x{img.height} (after EXIF orientation)")
            arrays, tgts, where, size = self._views(img, m, masks is not None)
            keys = [sha] if where is None else [sha and f"{sha}#{x},{y}@{size[0]}x{size[1]}" for x, y in where]
            return img.size, arrays, tgts, keys, where, size

        batch = min(preferred_batch_size(self.backbone(j)) for j in range(len(specs)))
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="fakescope-loc") as pool:
            for idx in _chunks(range(len(images)), max(1, batch if not self.tiled else 1)):
                loaded = list(pool.map(load, idx))
                views = [(arrays, key) for _, arrs, _, keys, _, _ in loaded for arrays, key in zip(arrs, keys)]
                for part in _chunks(views, batch):
                    for j, sp in enumerate(specs):
                        stores[j].add(self._grids(j, [arrays[j] for arrays, _ in part], [k for _, k in part],
                                                  caches[j] if caches else None))
                for size, _, tgts, _, where, tsize in loaded:
                    sizes.append(size)
                    windows.append(where)
                    tiled_sizes.append(tsize)
                    targets += [t for t in tgts if t is not None]
        for c in caches or ():
            c.flush()
        return _Prepared([st.array() for st in stores], sizes,
                         np.stack(targets) if masks is not None and targets else None,
                         windows if self.tiled else None, tiled_sizes if self.tiled else None)

    def _grids(self, j: int, arrays: list[np.ndarray], shas: list[str | None],
               cache: _GridCache | None) -> np.ndarray:
        """(n, h, w, C) patch grids of backbone j: from the disk cache where present, else computed."""
        keys = [cache.key(sha) for sha in shas] if cache else [None] * len(arrays)
        todo = [i for i, k in enumerate(keys) if not (cache and k in cache)]
        out: np.ndarray | None = None
        if todo:
            batch = np.stack([arrays[i] for i in todo])
            bb = self.backbone(j)
            if j == 0 and self.config.blocks:
                if not hasattr(bb, "block_grids"):
                    raise ValueError(f"backbone {self.specs[j].name} cannot give several blocks' grids (blocks=)")
                computed = np.asarray(bb.block_grids(batch, tuple(int(k) for k in self.config.blocks)), np.float32)
            else:
                feats = bb.forward(batch, want_patches=True)
                if feats.patches is None:
                    raise ValueError(f"backbone {self.specs[j].name} gives no patch grid; it cannot feed a localiser")
                computed = np.asarray(feats.patches, np.float32)
            out = np.empty((len(arrays),) + computed.shape[1:], np.float32)
            out[todo] = computed
            if cache:
                cache.put([keys[i] for i in todo], computed)
        hits = [i for i in range(len(arrays)) if i not in set(todo)]
        if hits:
            got = cache.get([keys[i] for i in hits])
            if out is None:
                out = np.empty((len(arrays),) + got.shape[1:], np.float32)
            out[hits] = got
        return out

    # -------------------------------------------------------------- decoding
    def _logits(self, grids: list[np.ndarray], idx, decoder: ConvDecoder | None = None,
                size: int | None = None) -> torch.Tensor:
        decoder = decoder or self.decoder
        x = torch.from_numpy(grids[0][idx]).float()
        second = torch.from_numpy(grids[1][idx]).float() if len(grids) > 1 else None
        return decoder(x, second, size=size or self.spec.input_size)[:, 0]

    def _all_logits(self, grids: list[np.ndarray], batch_size: int, size: int | None = None) -> torch.Tensor:
        """(N, s, s) logits of the current decoder in eval mode (s = size or input_size)."""
        self.decoder.eval()
        n = len(grids[0])
        s = size or self.spec.input_size
        out = torch.empty((n, s, s))
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                idx = np.arange(i, min(n, i + batch_size))
                out[i:i + len(idx)] = self._logits(grids, idx, size=s)
        return out

    # -------------------------------------------------------------- training
    def fit(self, train_pairs: Sequence[tuple[ImageSource, MaskSource]],
            val_pairs: Sequence[tuple[ImageSource, MaskSource]] | None = None,
            log: Callable[[str], Any] | None = print) -> dict:
        """Train a fresh decoder on frozen features; returns (and stores in metadata) a summary."""
        cfg = self.config
        cfg.check()
        log = log or (lambda _msg: None)
        train_pairs, val_pairs = list(train_pairs), list(val_pairs or [])
        if not train_pairs:
            raise ValueError("no training pairs")
        t0 = time.perf_counter()
        train = self._prepare([p[0] for p in train_pairs], [p[1] for p in train_pairs])
        val = self._prepare([p[0] for p in val_pairs], [p[1] for p in val_pairs]) if val_pairs else None
        t_feat = time.perf_counter() - t0
        grid = train.grids[0].shape[2:]
        log(f"features: {len(train_pairs)} train + {len(val_pairs)} val images, grid {grid[0]}x{grid[1]}, "
            f"{sum(g.nbytes for g in train.grids) / 2**20:.1f} MiB, {t_feat:.1f}s")
        return self.fit_grids(train, val, log, feature_seconds=t_feat)

    def fit_grids(self, train: _Prepared, val: _Prepared | None = None, log: Callable[[str], Any] | None = print,
                  feature_seconds: float = 0.0) -> dict:
        """Train a fresh decoder on grids already computed (`fit` computes them; cross-validation
        reuses cached ones): grids (N, C, h, w) per backbone and uint8 targets (N, s, s)."""
        cfg = self.config
        log = log or (lambda _msg: None)
        t_feat = feature_seconds
        grid = train.grids[0].shape[2:]
        if cfg.solver == "ridge":
            return self._fit_ridge(train, t_feat)

        pos = float(train.targets.astype(np.float64).mean() / 255.0)
        if pos <= 0.0:
            raise ValueError("the training masks mark no manipulated pixel: nothing to localise")
        weights = None
        if cfg.balanced:
            weights = (0.5 / pos, 0.5 / max(1.0 - pos, 1e-6))
        pos_weight = torch.tensor(cfg.pos_weight) if cfg.pos_weight is not None else None

        def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            w = None if weights is None else y * weights[0] + (1 - y) * weights[1]
            return F.binary_cross_entropy_with_logits(logits, y, weight=w, pos_weight=pos_weight)

        ts = min(cfg.target_size or self.spec.input_size, self.spec.input_size)
        train_y = _shrink(train.targets, ts)
        torch.manual_seed(cfg.seed)
        decoder = ConvDecoder(train.grids[0].shape[1], width=cfg.width, stages=cfg.stages,
                              grid=min(grid), output_size=ts,
                              second_channels=train.grids[1].shape[1] if len(train.grids) > 1 else 0,
                              **DECODER_PRESETS[cfg.decoder])
        opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)

        select = cfg.select
        val_pixels = None
        if val is not None:
            val_y = _shrink(val.targets, ts)
            val_bin = (val_y >= 0.5).numpy().ravel()
            rng = np.random.default_rng(cfg.seed)
            val_pixels = (rng.choice(val_bin.size, _AUC_PIXELS, replace=False)
                          if val_bin.size > _AUC_PIXELS else np.arange(val_bin.size))
            both_classes = val_bin[val_pixels].min() != val_bin[val_pixels].max()
            if select == "auc" and not both_classes:
                select = "loss"  # AUC needs both pixel classes
        history, best, best_state = [], None, None
        n = len(train.targets)
        t1 = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            decoder.train()
            total = 0.0
            for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
                idx = idx.numpy()
                loss = loss_fn(self._logits(train.grids, idx, decoder, size=ts), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            row = {"epoch": epoch, "loss": round(total / n, 6)}
            if val is not None:
                self.decoder = decoder
                logits = self._all_logits(val.grids, cfg.batch_size, size=ts)
                row["val_loss"] = round(float(loss_fn(logits, val_y)), 6)
                row["val_auc"] = None if not both_classes else \
                    round(roc_auc(val_bin[val_pixels], logits.numpy().ravel()[val_pixels]), 6)
                score = row["val_auc"] if select == "auc" else -row["val_loss"]
                if best is None or score > best[1]:
                    best, best_state = (epoch, score), copy.deepcopy(decoder.state_dict())
            history.append(row)
            log("epoch {epoch}/{total}: ".format(epoch=epoch, total=cfg.epochs)
                + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch" and v is not None))
        if best_state is not None:
            decoder.load_state_dict(best_state)
        decoder.eval()
        self.decoder = decoder
        info = {"n_train": n, "n_val": 0 if val is None else len(val.targets), "grid": list(grid), "stages": decoder.stages,
                "pos_fraction": round(pos, 6), "feature_dtype": str(train.grids[0].dtype),
                "selected_by": select if val is not None else "last",
                "best_epoch": best[0] if best is not None else cfg.epochs,
                "feature_seconds": round(t_feat, 2), "train_seconds": round(time.perf_counter() - t1, 2),
                "epochs": history}
        self.metadata["training"] = info
        return info

    def _fit_ridge(self, train: _Prepared, feature_seconds: float) -> dict:
        """A linear decoder in closed form: ridge regression of each patch's edited fraction on its
        standardised features (the decoder's input BatchNorm holds the standardisation), then
        logit = ridge_slope x (prediction - 0.5). Deterministic; one pass over the grids."""
        if len(train.grids) > 1:
            raise ValueError("the ridge solver reads one grid (no second_backbone)")
        t1 = time.perf_counter()
        g = train.grids[0]
        n_img, c, h, w = g.shape
        y = _shrink(train.targets, h).numpy() if h == w else None
        if y is None:
            raise ValueError(f"the ridge solver needs a square grid, got {h}x{w}")
        xtx, xty, sx, sy, n = np.zeros((c, c)), np.zeros(c), np.zeros(c), 0.0, 0
        for part in _chunks(range(n_img), 64):
            x = np.asarray(g[list(part)], np.float64).transpose(0, 2, 3, 1).reshape(-1, c)
            t = y[list(part)].reshape(-1).astype(np.float64)
            xtx += x.T @ x
            xty += x.T @ t
            sx += x.sum(0)
            sy += t.sum()
            n += len(x)
        mu, ybar = sx / n, sy / n
        cov = xtx / n - np.outer(mu, mu)
        sd = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
        corr = cov / np.outer(sd, sd)
        cxy = (xty / n - mu * ybar) / sd
        coef = np.linalg.solve(corr + np.eye(c) * self.config.ridge_lambda / 1000.0, cxy)
        torch.manual_seed(self.config.seed)
        decoder = ConvDecoder(c, stages=0, output_size=h, input_norm=True, head_kernel=1)
        with torch.no_grad():
            bn = decoder.input_norm
            bn.running_mean.copy_(torch.from_numpy(mu).float())
            bn.running_var.copy_(torch.from_numpy(np.clip(sd ** 2 - bn.eps, 0.0, None)).float())
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            slope = self.config.ridge_slope
            decoder.head.weight.copy_(torch.from_numpy(slope * coef).float().view(1, c, 1, 1))
            decoder.head.bias.fill_(float(slope * (ybar - 0.5)))
        decoder.eval()
        self.decoder = decoder
        info = {"n_train": n_img, "n_val": 0, "grid": [h, w], "stages": 0, "solver": "ridge",
                "ridge_lambda": self.config.ridge_lambda, "pos_fraction": round(float(ybar), 6),
                "feature_dtype": str(g.dtype), "selected_by": "closed form",
                "feature_seconds": round(feature_seconds, 2), "train_seconds": round(time.perf_counter() - t1, 2)}
        self.metadata["training"] = info
        return info

    def recenter(self, threshold: float) -> None:
        """Fold a mask threshold into the decoder so that map >= 0.5 is that decision: the logits
        move by -logit(threshold) (the head's bias; the final resize is linear), so the written
        map's grey 128 is the cut. Rankings, AUC and best-F1 are unchanged."""
        decoder = self._need_decoder()
        t = min(max(float(threshold), 1e-6), 1 - 1e-6)
        with torch.no_grad():
            decoder.head.bias -= float(np.log(t / (1 - t)))
        self.threshold = 0.5

    # -------------------------------------------------------------- inference
    def _need_decoder(self) -> ConvDecoder:
        if self.decoder is None:
            raise RuntimeError("this Localizer has no decoder yet: fit it or load a saved one")
        return self.decoder

    def predict_maps(self, images: ImageSource | Sequence[ImageSource], outside: str | float = "mean",
                     batch_size: int | None = None) -> list[np.ndarray]:
        """Float32 (H, W) probability maps, one per image, at each image's original size.

        `outside`: value of pixels the crop never showed the backbone (`restore_map`).
        Unreadable images raise (fakescope.images.ImageError)."""
        self._need_decoder()
        if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
            images = [images]
        images = list(images)
        if not images:
            return []
        prepared = self._prepare(images)
        logits = self._all_logits(prepared.grids, batch_size or self.config.batch_size)
        return self._image_maps(logits.numpy(), prepared, outside)

    def _image_maps(self, logits: np.ndarray, prepared: _Prepared, outside: str | float = "mean") -> list[np.ndarray]:
        """Per-view logits -> one probability map per image at its own size. Windows are averaged
        and resized as logits (then squashed), so a threshold moved into the logits (`recenter`)
        cuts the stitched map exactly where it cut before."""
        if prepared.windows is None:
            probs = 1.0 / (1.0 + np.exp(-logits))
            return [restore_map(p, size, self.spec, outside) for p, size in zip(probs, prepared.sizes)]
        out, start = [], 0
        for size, where, tsize in zip(prepared.sizes, prepared.windows, prepared.tiled):
            z = tiles.stitch(logits[start:start + len(where)], where, tsize, size)
            out.append((1.0 / (1.0 + np.exp(-z))).astype(np.float32))
            start += len(where)
        return out

    def edit_score(self, prob_map: np.ndarray) -> float | None:
        """The image-level "was this edited" score of a map under image_rule (None without a rule)."""
        if not self.image_rule:
            return None
        from ..evaluation.localization import top_mean
        return top_mean(np.nan_to_num(prob_map, nan=0.0), float(self.image_rule["fraction"]))

    def flags_edit(self, prob_map: np.ndarray) -> bool:
        """Whether the map shows a confident edited region (edit_score >= the rule's threshold)."""
        score = self.edit_score(prob_map)
        if score is None or min(np.shape(prob_map)[:2]) < float(self.image_rule.get("min_side", 0)):
            return False  # no rule, or an image smaller than those the rule was measured on
        return score >= float(self.image_rule["threshold"])

    def predict_masks(self, images: ImageSource | Sequence[ImageSource]) -> list[np.ndarray]:
        """Boolean (H, W) masks: map >= threshold."""
        return [m >= self.threshold for m in self.predict_maps(images)]

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        decoder = self._need_decoder()
        meta = {"format": FORMAT, "backbone": asdict(self.spec),
                "second_backbone": asdict(self.second_spec) if self.second_spec is not None else None,
                "config": asdict(self.config), "decoder": decoder.config(), "threshold": self.threshold,
                "image_rule": self.image_rule, "metadata": self.metadata}
        state = {k: v.detach().cpu().numpy() for k, v in decoder.state_dict().items()}
        return save_model_dir(directory, meta, "localizer.json", state, "decoder.safetensors")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Localizer":
        meta, state = load_model_dir(directory, "localizer.json", "decoder.safetensors", FORMAT,
                                     "`fakescope localizer train`")
        try:  # checked as data, like a detector folder (saving.py): one clear error, nothing from outside
            decoder = ConvDecoder(**meta["decoder"])
            decoder.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
            decoder.eval()
            second = meta.get("second_backbone")
            return cls(config=LocalizerConfig(**meta["config"]), spec=model_backbone_spec(meta["backbone"], directory),
                       second_spec=model_backbone_spec(second, directory) if second else None, decoder=decoder,
                       threshold=finite_number(meta["threshold"], "threshold", directory),
                       image_rule=_image_rule(meta.get("image_rule"), directory), metadata=meta.get("metadata", {}))
        except ModelFolderError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, RecursionError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e)[:120]}"
            raise ModelFolderError(f"{directory}: broken localizer ({what})") from None


