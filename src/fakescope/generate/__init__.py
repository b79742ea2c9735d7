"""The dataset builder: fakes from captions (COCOFake / D3-style) and inpainted real photos with
masks (Dolos-style), through Hugging Face diffusers pipelines (the `generate` extra).

    spec.py       GeneratorSpec: `[NAME=]HUB_ID_OR_DIR[?steps=30&guidance=7.5&size=512...]`, aliases
    pipelines.py  load_pipeline (Auto pipelines, dtype/device, safety checker), PipelineWorker
    engine.py     run a per-batch worker locally or on a Ray actor pool (one pipeline per actor)
    output.py     image encoding (atomic writes and the JSONL manifest: fakescope/files.py)
    fakes.py      captions manifest, COCO converter, job plan and seeds, GenerateBatch, build_fakes
    inpaint.py    masks (folder or generated shapes), paste-back, InpaintBatch, build_inpaint
    commands.py   `fakescope build fakes|inpaint|coco-captions`
    tiny.py       tiny random SD pipelines for tests and offline trials

diffusers is imported lazily, inside the functions that load pipelines: importing this package
does not need it. See docs/datasets.md.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# Lazy: the CLI imports `generate.commands` at start-up, and fakes/inpaint pull in torch.
_EXPORTS = {**{n: "fakes" for n in ("GenerateBatch", "build_fakes", "coco_captions_manifest", "read_captions")},
            **{n: "inpaint" for n in ("InpaintBatch", "build_inpaint")},
            **{n: "spec" for n in ("GeneratorSpec", "parse_generator")}}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
