"""Loading diffusers pipelines from a GeneratorSpec, and the per-batch worker both engines run.

diffusers is imported here, lazily (inside functions): `import fakescope` and `fakescope --help`
never need it. Install it with the `generate` extra (`pip install "fakescope[generate]"`).

Loading (`load_pipeline`):
  * text-to-image: `AutoPipelineForText2Image.from_pretrained(ref)`; inpainting:
    `AutoPipelineForInpainting.from_pretrained(ref)` (which also turns a text-to-image checkpoint
    such as SD 1.4 into its inpainting pipeline: legacy latent-blending inpainting with the
    4-channel UNet). Pipelines the Auto classes do not map fall back to
    `DiffusionPipeline.from_pretrained`; `?pipeline=CLASS` names the class outright.
  * the task is read from the checkpoint's model_index.json before loading: an inpainting
    checkpoint (class name containing "Inpaint") cannot make text-to-image fakes.
  * dtype: fp16 on CUDA, fp32 on CPU unless the spec says otherwise; `?variant=fp16` fetches
    the half-size weight files of hub repos that have them.
  * the per-step progress bars of diffusers are always switched off (fakescope shows its own).
  * the safety checker stays as the checkpoint ships it (SD 1.x/2.x inpainting: on) unless the
    user opts out (`--no-safety-checker`). With it on, an image it flags comes back black; the
    builder does not write it and records the item as `nsfw_filtered` in errors.jsonl (retried
    never: the same seed gives the same image). Opting out keeps every image, which is what
    an unbiased detector training set needs, and is the user's responsibility under the
    model licence.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable

from .spec import GeneratorSpec, parse_generator, resolve_device, resolve_dtype


def _missing_diffusers() -> ImportError:
    return ImportError("the dataset builder needs diffusers and transformers: "
                       "pip install 'fakescope[generate]'")


def read_pipeline_config(ref: str, revision: str | None = None) -> dict:
    """The checkpoint's model_index.json (local folder, hub cache, or hub); {} when unavailable."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError as e:
        raise _missing_diffusers() from e
    try:
        return dict(DiffusionPipeline.load_config(ref, revision=revision))
    except Exception:  # noqa: BLE001 - no model_index (a single-file checkpoint), offline, ...
        return {}


def infer_kind(config: dict, spec: GeneratorSpec | None = None) -> str:
    if spec is not None and spec.kind:
        return spec.kind
    cls = str(config.get("_class_name", ""))
    return "inpaint" if "Inpaint" in cls else "text2img"


@contextlib.contextmanager
def _quiet_loading():
    """Hide the per-component loading bars of diffusers/transformers while a pipeline loads."""
    undo = []
    try:
        from diffusers.utils import logging as dlog
        if dlog.is_progress_bar_enabled():
            dlog.disable_progress_bar()
            undo.append(dlog.enable_progress_bar)
    except Exception:  # noqa: BLE001
        pass
    try:
        from transformers.utils import logging as tlog
        if tlog.is_progress_bar_enabled():
            tlog.disable_progress_bar()
            undo.append(tlog.enable_progress_bar)
    except Exception:  # noqa: BLE001
        pass
    try:
        yield
    finally:
        for f in undo:
            f()


def check_task(spec: GeneratorSpec | str, task: str) -> None:
    """Refuse, before any weight is loaded, a checkpoint that cannot do `task` (an inpainting
    checkpoint asked for text-to-image fakes). Reads model_index.json only."""
    spec = parse_generator(spec)
    if task == "text2img":
        config = read_pipeline_config(spec.ref, spec.revision)
        if infer_kind(config, spec) == "inpaint":
            raise ValueError(f"generator {spec.name} ({spec.ref}) is an inpainting pipeline "
                             f"({config.get('_class_name', 'kind=inpaint')}): use it with `fakescope build inpaint`")


def load_pipeline(spec: GeneratorSpec | str, task: str = "text2img", safety_checker: bool = True):
    """A ready diffusers pipeline for `task` ("text2img" or "inpaint") on the spec's device and
    dtype. ValueError when the checkpoint's task is not `task` (an inpainting checkpoint asked
    for text-to-image fakes) or a named class does not exist."""
    spec = parse_generator(spec)
    try:
        import diffusers
    except ImportError as e:
        raise _missing_diffusers() from e
    if task not in ("text2img", "inpaint"):
        raise ValueError("task must be text2img or inpaint")
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    check_task(spec, task)
    config = read_pipeline_config(spec.ref, spec.revision)
    from diffusers.pipelines import pipeline_utils

    # diffusers renamed torch_dtype= to dtype= (the old name still works, with a warning)
    kwargs: dict = {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # what diffusers falls back to anyway, minus its warning
    if spec.variant:
        kwargs["variant"] = spec.variant
    if spec.revision:
        kwargs["revision"] = spec.revision
    if not safety_checker and config.get("safety_checker") not in (None, [None, None]):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    with _quiet_loading():
        if spec.pipeline:
            cls = getattr(diffusers, spec.pipeline, None)
            if cls is None or not hasattr(cls, "from_pretrained"):
                raise ValueError(f"diffusers has no pipeline class {spec.pipeline!r}")
            pipe = cls.from_pretrained(spec.ref, **kwargs)
        else:
            auto = diffusers.AutoPipelineForInpainting if task == "inpaint" else diffusers.AutoPipelineForText2Image
            try:
                pipe = auto.from_pretrained(spec.ref, **kwargs)
            except ValueError as e:
                if "can't find a pipeline" not in str(e):
                    raise
                pipe = diffusers.DiffusionPipeline.from_pretrained(spec.ref, **kwargs)
    if spec.scheduler:
        sched = getattr(diffusers, spec.scheduler, None)
        if sched is None or not hasattr(sched, "from_config"):
            raise ValueError(f"diffusers has no scheduler class {spec.scheduler!r}")
        pipe.scheduler = sched.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    return pipe


def call_defaults(pipe) -> dict:
    """Defaults of the pipeline's __call__ (guidance_scale, strength, ...), for the manifest."""
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def native_size(pipe) -> tuple[int | None, int | None]:
    """(width, height) the pipeline makes when none is given: UNet sample size x VAE factor."""
    try:
        side = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
        return side, side
    except Exception:  # noqa: BLE001 - transformer-based or pixel-space pipelines
        return None, None


class PipelineWorker:
    """Base of the picklable per-batch callables: holds a spec and options, loads its pipeline
    on first use (once per process: one per Ray actor), never pickles it."""

    task = "text2img"

    def __init__(self, spec: GeneratorSpec | str | dict, options: dict | None = None):
        if isinstance(spec, dict):
            spec = GeneratorSpec.from_dict(spec)
        self.spec = parse_generator(spec)
        self.options = dict(options or {})
        self._pipe = None
        self._defaults: dict = {}
        self._load_error: Exception | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pipe"], state["_defaults"], state["_load_error"] = None, {}, None
        return state

    @property
    def pipe(self):
        if self._load_error is not None:  # a failed load is not retried for every batch
            raise self._load_error
        if self._pipe is None:
            loader: Callable = self.options.get("loader") or load_pipeline
            try:
                self._pipe = loader(self.spec, self.task, safety_checker=self.options.get("safety_checker", True))
            except Exception as e:
                self._load_error = e
                raise
            self._defaults = call_defaults(self._pipe)
        return self._pipe

    def generator_info(self) -> dict:
        """What the manifest records about the generator (after the pipeline is loaded)."""
        pipe = self.pipe
        guidance = self.spec.guidance if self.spec.guidance is not None else self._defaults.get("guidance_scale")
        return {
            "generator": self.spec.name,
            "model": self.spec.ref,
            "revision": self.spec.revision,
            "pipeline": type(pipe).__name__,
            "scheduler": type(getattr(pipe, "scheduler", None)).__name__,
            "steps": int(self.spec.steps),
            "guidance": None if guidance is None else float(guidance),
            "dtype": str(getattr(pipe, "dtype", "")).replace("torch.", ""),
        }

    def release(self) -> None:
        """Drop the pipeline (and the CUDA cache) so the next generator fits in GPU memory."""
        self._pipe = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def torch_generators(seeds) -> list:
    """One CPU torch.Generator per item: the initial noise depends on the item's seed only, not
    on the device, the batch size or the other items of the batch."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


__all__ = ["load_pipeline", "check_task", "read_pipeline_config", "infer_kind", "call_defaults", "native_size",
           "PipelineWorker", "torch_generators"]
