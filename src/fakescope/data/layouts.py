"""The published benchmarks in the folder layouts their authors release them in.

None of COCOFake, GenImage or Synthbuster has an official Hugging Face copy: they are
downloaded as folders, so these readers (not a `datasets` column mapping) are the way to
read them. Layouts, as their loaders and download instructions lay them out:

  cocofake:<COCOFAKE>?coco=<COCO>&split=val2014[&captions=captions_val2014.json]
      COCOFAKE/<split>/<image id>/<k>.png   the fakes generated from the captions of one COCO
                                            image (the "children" of that parent)
      COCO/**/<image id>.jpg                the real parents (COCO 2014 images, any subfolder)
      Every fake gets `text` = caption k of its parent when a COCO captions file is given
      (the fakes' sorted order is taken as the caption order), the real gets its first caption.
      Parent and children share `group` = the image id: splits keep a family on one side.

  genimage:<ROOT>?split=val[&generators=adm,glide]
      ROOT/<generator>/<split>/ai/**        fakes of that generator
      ROOT/<generator>/<split>/nature/**    the ImageNet reals that come with it

  synthbuster:<ROOT>?real=<RAISE dir>
      ROOT/<generator>/**                   dalle2, dalle3, firefly, glide, midjourney-v5,
                                            stable-diffusion-1-3, -1-4, -2, -xl
      RAISE dir/**                          the RAISE-1k reals (downloaded separately); a
                                            `raise` or `real` folder under ROOT is used if present
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl

from .samples import FAKE, REAL, Sample, is_image_name

LAYOUTS = ("cocofake", "genimage", "synthbuster")


def _images(root: Path) -> list[Path]:
    return sorted(f for f in root.rglob("*") if f.is_file() and is_image_name(f.name))


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{what}: {path} is not a folder")
    return path


def _coco_captions(path: Path) -> dict[str, list[str]]:
    """COCO captions JSON -> {file stem: [captions in annotation order]}."""
    data = json.loads(path.read_text(encoding="utf-8"))
    stems = {img["id"]: Path(img["file_name"]).stem for img in data["images"]}
    out: dict[str, list[str]] = {}
    for ann in data["annotations"]:
        if ann["image_id"] in stems:
            out.setdefault(stems[ann["image_id"]], []).append(ann["caption"].strip())
    return out


def iter_cocofake(root: Path, coco: Path | None, split: str = "val2014", captions: Path | None = None,
                  generator: str | None = None) -> Iterator[Sample]:
    fakes_root = _need_dir(root / split, "cocofake")
    texts = _coco_captions(captions) if captions else {}
    reals = {f.stem: f for f in _images(_need_dir(coco, "cocofake coco="))} if coco else {}
    source = f"cocofake:{root}"
    for parent in sorted(d for d in fakes_root.iterdir() if d.is_dir()):
        caps = texts.get(parent.name, [])
        if parent.name in reals:  # a family: the parent and its children share a group, so no split parts them
            yield Sample(path=str(reals[parent.name]), label=REAL, text=caps[0] if caps else None, source=source,
                         group=parent.name)
        for k, f in enumerate(_images(parent)):
            yield Sample(path=str(f), label=FAKE, generator=generator, text=caps[k] if k < len(caps) else None,
                         source=source, group=parent.name)


def iter_genimage(root: Path, split: str = "val", generators: list[str] | None = None) -> Iterator[Sample]:
    source = f"genimage:{root}"
    for gen_dir in sorted(d for d in _need_dir(root, "genimage").iterdir() if d.is_dir()):
        if generators and gen_dir.name not in generators:
            continue
        for sub, label in (("nature", REAL), ("ai", FAKE)):
            folder = gen_dir / split / sub
            if folder.is_dir():
                for f in _images(folder):
                    yield Sample(path=str(f), label=label, generator=gen_dir.name if label == FAKE else None,
                                 source=source)


def iter_synthbuster(root: Path, real: Path | None = None) -> Iterator[Sample]:
    source = f"synthbuster:{root}"
    real_names = ("raise", "real")
    if real is None:
        real = next((root / n for n in real_names if (root / n).is_dir()), None)
    if real is None:
        raise ValueError("synthbuster: no reals; pass ?real=<RAISE-1k folder> (Synthbuster ships fakes only)")
    for f in _images(_need_dir(real, "synthbuster real=")):
        yield Sample(path=str(f), label=REAL, source=source)
    for gen_dir in sorted(d for d in _need_dir(root, "synthbuster").iterdir() if d.is_dir()):
        if gen_dir.name in real_names or gen_dir.resolve() == real.resolve():
            continue
        for f in _images(gen_dir):
            yield Sample(path=str(f), label=FAKE, generator=gen_dir.name, source=source)


def iter_layout(ref: str) -> Iterator[Sample]:
    """`cocofake:...`, `genimage:...`, `synthbuster:...` as described in the module docstring."""
    kind, _, rest = ref.partition(":")
    path, _, query = rest.partition("?")
    opts = dict(parse_qsl(query))
    root = Path(path)
    as_path = lambda key: Path(opts[key]) if opts.get(key) else None  # noqa: E731
    if kind == "cocofake":
        return iter_cocofake(root, as_path("coco"), opts.get("split", "val2014"), as_path("captions"),
                             opts.get("generator"))
    if kind == "genimage":
        gens = [g for g in opts.get("generators", "").split(",") if g] or None
        return iter_genimage(root, opts.get("split", "val"), gens)
    if kind == "synthbuster":
        return iter_synthbuster(root, as_path("real"))
    raise ValueError(f"unknown layout {kind!r}; known: {', '.join(LAYOUTS)}")
