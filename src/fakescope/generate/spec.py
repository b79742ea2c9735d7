"""Generator specs: which diffusers pipeline makes the fakes, and how.

A spec is a string, the way backbones are:

    [NAME=]REF[?key=value&key=value...]

    sd14=CompVis/stable-diffusion-v1-4?steps=30&guidance=7.5&size=512
    sd21=stabilityai/stable-diffusion-2-1-base
    tiny=/tmp/tiny-sd?steps=2&size=32
    sd14                      (a known alias: the hub id and settings below)

REF is a Hugging Face hub id or a local folder written by `save_pretrained`. NAME labels every
output (the generator column of the manifest and the folder `fake/<NAME>/`); without one it is the
alias, or the last path component of REF, lower-cased and sanitised.

Keys (all optional):
  steps=N          denoising steps (default 30)
  guidance=G       classifier-free guidance scale (default: the pipeline's own default)
  size=N           width = height = N;  width=W / height=H for non-square outputs
                   (default: the pipeline's native size, e.g. 512 for SD 1.x, 1024 for SDXL)
  kind=text2img|inpaint   the task; default: inferred from the pipeline class (…Inpaint… = inpaint)
  pipeline=CLASS   a diffusers pipeline class name to load with (default: the Auto pipelines)
  scheduler=CLASS  replace the scheduler, e.g. DPMSolverMultistepScheduler (from the pipeline's config)
  dtype=auto|fp16|bf16|fp32   default auto: fp16 on CUDA, fp32 elsewhere
  device=auto|cpu|cuda|cuda:1|mps   default auto: cuda when available, else cpu
  variant=fp16     load the hub repo's fp16 weight files (half the download)
  revision=REV     a hub branch, tag or commit (pin it for a reproducible dataset)
  negative=TEXT    negative prompt (URL-encode spaces as %20 or +)
  strength=S       inpainting strength (default 1.0: the masked region is fully re-generated)
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl

KINDS = ("text2img", "inpaint")
DTYPES = ("auto", "fp16", "bf16", "fp32")

# Known aliases: the hub ids docs/datasets.md uses (with their native sizes, for reference only: the
# pipeline makes that size unless --size or size= says otherwise). An alias is only a short name:
# everything can be set with ?key=value, and any other hub id works as REF.
ALIASES: dict[str, dict] = {
    "sd14": {"ref": "CompVis/stable-diffusion-v1-4", "size": 512},
    "sd15": {"ref": "stable-diffusion-v1-5/stable-diffusion-v1-5", "size": 512},
    "sd20": {"ref": "stabilityai/stable-diffusion-2-base", "size": 512},
    "sd21": {"ref": "stabilityai/stable-diffusion-2-1-base", "size": 512},
    "sdxl": {"ref": "stabilityai/stable-diffusion-xl-base-1.0", "size": 1024},
    "sd15-inpaint": {"ref": "stable-diffusion-v1-5/stable-diffusion-inpainting", "size": 512, "kind": "inpaint"},
    "sd2-inpaint": {"ref": "stabilityai/stable-diffusion-2-inpainting", "size": 512, "kind": "inpaint"},
    "sdxl-inpaint": {"ref": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "size": 1024, "kind": "inpaint"},
}

DEFAULT_STEPS = 30


def safe_name(text: str) -> str:
    """A folder/column-safe generator name: letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "generator"


@dataclass(frozen=True)
class GeneratorSpec:
    name: str
    ref: str                          # hub id or local folder
    steps: int | None = None          # None: --steps of the command, else DEFAULT_STEPS
    guidance: float | None = None     # None: the pipeline's default
    width: int | None = None          # None: the pipeline's native size
    height: int | None = None
    kind: str | None = None           # text2img | inpaint | None (infer from the pipeline class)
    pipeline: str | None = None       # diffusers class name to load with
    scheduler: str | None = None      # diffusers scheduler class name
    dtype: str = "auto"
    device: str = "auto"
    variant: str | None = None
    revision: str | None = None
    negative: str | None = None
    strength: float | None = None     # inpainting only

    def __post_init__(self):
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be >= 1")
        for side in (self.width, self.height):
            if side is not None and (side < 8 or side % 4):
                raise ValueError(f"width/height must be multiples of 4 (8 for real SD models), >= 8; got {side}")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise ValueError("strength must be in (0, 1]")

    @property
    def is_local(self) -> bool:
        return Path(self.ref).expanduser().is_dir()

    def with_defaults(self, size: int | None = None, device: str | None = None, dtype: str | None = None,
                      steps: int | None = None, guidance: float | None = None) -> "GeneratorSpec":
        """Fill what the spec string left open from command-line defaults (the spec's own wins)."""
        changes: dict = {}
        if size and self.width is None and self.height is None:
            changes.update(width=size, height=size)
        if device and self.device == "auto":
            changes["device"] = device
        if dtype and self.dtype == "auto":
            changes["dtype"] = dtype
        if self.steps is None:
            changes["steps"] = steps or DEFAULT_STEPS
        if guidance is not None and self.guidance is None:
            changes["guidance"] = guidance
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorSpec":
        return cls(**d)

    def __str__(self) -> str:  # round-trips through parse_generator
        opts = []
        for key, val in (("steps", self.steps), ("guidance", self.guidance), ("width", self.width), ("height", self.height),
                         ("kind", self.kind), ("pipeline", self.pipeline), ("scheduler", self.scheduler),
                         ("variant", self.variant), ("revision", self.revision), ("negative", self.negative),
                         ("strength", self.strength)):
            if val is not None:
                opts.append(f"{key}={val}")
        if self.dtype != "auto":
            opts.append(f"dtype={self.dtype}")
        if self.device != "auto":
            opts.append(f"device={self.device}")
        return f"{self.name}={self.ref}?" + "&".join(opts)


_INT = ("steps", "width", "height", "size")
_FLOAT = ("guidance", "strength")
_STR = ("kind", "pipeline", "scheduler", "dtype", "device", "variant", "revision", "negative")


def parse_generator(text: str | GeneratorSpec) -> GeneratorSpec:
    """`[NAME=]REF[?key=value&...]` (see the module doc) -> GeneratorSpec. ValueError when malformed."""
    if isinstance(text, GeneratorSpec):
        return text
    head, _, query = str(text).strip().partition("?")
    name, sep, ref = head.partition("=")
    if not sep:
        name, ref = "", head
    name, ref = name.strip(), ref.strip()
    if not ref:
        raise ValueError(f"generator spec {text!r}: no hub id or folder")
    base: dict = {}
    if ref in ALIASES:
        alias = dict(ALIASES[ref])
        name = name or ref
        ref = alias.pop("ref")
        alias.pop("size", None)  # informational: the pipeline's own default, so --size can override it
        base.update(alias)
    if not name:
        name = Path(ref.rstrip("/")).name.lower()
    name = safe_name(name)
    unknown = []
    for key, val in parse_qsl(query, keep_blank_values=True):
        key = key.strip().lower()
        try:
            if key in _INT:
                v = int(val)
                if key == "size":
                    base.update(width=v, height=v)
                else:
                    base[key] = v
            elif key in _FLOAT:
                base[key] = float(val)
            elif key in _STR:
                base[key] = val
            else:
                unknown.append(key)
        except ValueError:
            raise ValueError(f"generator spec {text!r}: {key}={val!r} is not a number") from None
    if unknown:
        raise ValueError(f"generator spec {text!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                         "known: steps, guidance, size, width, height, kind, pipeline, scheduler, dtype, "
                         "device, variant, revision, negative, strength")
    if ("width" in base) != ("height" in base):
        side = base.get("width") or base.get("height")
        base.update(width=side, height=side)
    return GeneratorSpec(name=name, ref=ref, **base)


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda when torch sees a GPU, else mps (Apple) when available, else cpu."""
    if device and device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """auto -> fp16 on CUDA, fp32 elsewhere (CPU half precision is slow and partly unsupported)."""
    import torch

    if dtype == "auto":
        dtype = "fp16" if str(device).startswith("cuda") else "fp32"
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]


__all__ = ["GeneratorSpec", "parse_generator", "resolve_device", "resolve_dtype", "ALIASES", "KINDS",
           "DEFAULT_STEPS", "safe_name"]
