"""Backbone registry, addressed by strict spec strings.

    effnet-lite0                        a named offline model (PyPI wheel)
    hf-clip:openai/clip-vit-large-patch14   a loader prefix + a hub id or local dir
    hf-dinov2:/models/dinov2-small?layers=4,8&resize=native_crop
    vit-s14-focus?layers=6&pooled=0     only block 6's class token (an intermediate-layer probe)
    vit-s14-focus?patch_layer=8         patch grid (Features.patches) of block 8, not the last
    clip-b16?embed=cls                  the 768-d class token instead of the 512-d projection

Options after `?` override preprocessing (`resize`, `size`) or ask for intermediate
`layers` or the `patch_layer` the patch grid comes from (1-based block index, negative
counts from the end; backbones without addressable blocks refuse it at load), or which
global `embed` a backbone returns where it offers several (its spec lists them in
`extra["embed_dims"]` as name:dim pairs, the first being the default). Unknown
names, prefixes or options are errors, never silently ignored.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable
from urllib.parse import parse_qsl

from .spec import Backbone, BackboneSpec, Features, draft_gap_allowed, preprocess

# name or "prefix:" -> (spec factory taking the reference after the prefix, loader taking the spec)
SpecFactory = Callable[[str], BackboneSpec]
Loader = Callable[[BackboneSpec], Backbone]
_REGISTRY: dict[str, tuple[SpecFactory, Loader]] = {}
_OPTIONS = {"layers", "resize", "size", "pooled", "patch_layer", "embed", "draft", "windows"}
_loaded: dict[BackboneSpec, Backbone] = {}


def register(key: str, make_spec: SpecFactory, load: Loader) -> None:
    """key: an exact name ("effnet-lite0") or a prefix ending in ':' ("hf-clip:")."""
    _REGISTRY[key] = (make_spec, load)


def preferred_batch_size(backbone: Backbone) -> int:
    """Images per forward pass this backbone runs fastest at on CPU (a class attribute; 16 if unset)."""
    return int(getattr(backbone, "batch_size", 16))


def available() -> list[str]:
    _ensure_registered()
    return sorted(_REGISTRY)


def parse_spec(spec: str | BackboneSpec) -> BackboneSpec:
    if isinstance(spec, BackboneSpec):
        return spec
    _ensure_registered()
    base, _, query = spec.partition("?")
    if ":" in base:
        prefix, ref = base.split(":", 1)
        key = prefix + ":"
        if not ref:
            raise ValueError(f"backbone spec {spec!r}: nothing after {key!r}")
    else:
        key, ref = base, ""
    if key not in _REGISTRY:
        raise ValueError(f"unknown backbone {spec!r}; known: {', '.join(available())}")
    made = _REGISTRY[key][0](ref)
    opts = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    unknown = set(opts) - _OPTIONS
    if unknown:
        raise ValueError(f"backbone spec {spec!r}: unknown option(s) {sorted(unknown)}; allowed {sorted(_OPTIONS)}")
    changes: dict = {"name": spec}
    if "layers" in opts:
        changes["layers"] = tuple(int(x) for x in opts["layers"].split(",") if x)
    if "resize" in opts:
        if opts["resize"] not in ("resize_crop", "resize", "native_crop"):
            raise ValueError(f"backbone spec {spec!r}: resize must be resize_crop, resize or native_crop")
        changes["resize"] = opts["resize"]
    if "size" in opts:
        changes["input_size"] = int(opts["size"])
    if "patch_layer" in opts:
        try:
            k = int(opts["patch_layer"])
        except ValueError:
            k = 0
        if k == 0:
            raise ValueError(f"backbone spec {spec!r}: patch_layer must be a non-zero integer "
                             "(1-based block index, negative counts from the end)")
        changes["patch_layer"] = k
    if "embed" in opts:
        dims = dict(pair.split(":") for pair in dict(made.extra).get("embed_dims", "").split(",") if pair)
        if opts["embed"] not in dims:
            raise ValueError(f"backbone spec {spec!r}: embed must be one of {sorted(dims) or 'nothing'} here")
        changes["extra"] = made.extra + (("embed", opts["embed"]),)
        changes["dim"] = int(dims[opts["embed"]])
    if "draft" in opts:  # decode large JPEGs at reduced DCT scale, >= draft x input size on both sides
        try:
            gap = float(opts["draft"])
        except ValueError:
            gap = 0.0
        if not draft_gap_allowed(gap, changes.get("resize", made.resize)):
            raise ValueError(f"backbone spec {spec!r}: draft must be a number in 1..16, and native_crop reads "
                             "pixels as they are (no draft)")
        changes["draft_gap"] = gap
    if "windows" in opts:  # mean patch tokens of these blocks over native windows (spec.py native_windows)
        try:
            blocks = tuple(int(x) for x in opts["windows"].split(",") if x)
        except ValueError:
            blocks = ()
        if not blocks or 0 in blocks or "draft" in opts:
            raise ValueError(f"backbone spec {spec!r}: windows must be non-zero block numbers, e.g. windows=3,4,5,6 "
                             "(and no draft: the windows read every pixel)")
        changes["windows"] = blocks
    if "pooled" in opts:
        if opts["pooled"] not in ("0", "1"):
            raise ValueError(f"backbone spec {spec!r}: pooled must be 0 or 1")
        changes["pooled"] = opts["pooled"] == "1"
        if not changes["pooled"] and not changes.get("layers") and not changes.get("windows"):
            raise ValueError(f"backbone spec {spec!r}: pooled=0 needs layers=... or windows=... "
                             "(else there is nothing to read)")
    return replace(made, **changes)


def load_backbone(spec: str | BackboneSpec) -> Backbone:
    """Build (once per process) the backbone a spec names."""
    spec = parse_spec(spec)
    _ensure_registered()
    if spec.kind not in _REGISTRY:
        raise ValueError(f"backbone kind {spec.kind!r} unknown to this fakescope; known: {', '.join(available())}")
    if spec not in _loaded:
        backbone = _REGISTRY[spec.kind][1](spec)  # kind is the registry key
        if spec.windows and not getattr(backbone, "reads_windows", False):
            raise ValueError(f"{spec.name}: this backbone cannot read native windows (windows=); clip-b16 can")
        _loaded[spec] = backbone
    return _loaded[spec]


_registered = False


def _ensure_registered() -> None:
    # Loader modules import heavy libraries lazily, so registering them is cheap.
    global _registered
    if not _registered:
        _registered = True
        import importlib
        for module in ("hf", "offline", "trained", "fusion", "residuals"):  # each registers its names on import
            importlib.import_module(f"{__name__}.{module}")


__all__ = ["Backbone", "BackboneSpec", "Features", "available", "load_backbone", "parse_spec",
           "preprocess", "register"]
