"""Lay the extra sets out as the sources the leave-one-source-out protocol holds out.

Reads the tars built by ../shared/tools/stage_extra.py (DIR/sd512/train.tar, DIR/people/train.tar)
and writes two sources whose real and fake halves share content and photographic domain:

  DIR/sd512-imagenet/train.tar   sd512's ImageNet photos + its Stable Diffusion 1.x images
                                 (all 512x512 JPEG with the same quantisation tables)
  DIR/people-coco/train.tar      the photoreal people (DALL-E 3, SDXL, Stable Cascade), PNG or JPEG,
                                 all re-encoded as JPEG q95 at native size, + sd512's COCO photos
                                 (the real class: everyday photos, many of people)

so no real image appears in two sources. photos-digicam/photos-mei are used as they are
(real/<device>/<file>). With a second argument, the shared data folder, it also writes

  DIR/cocoglide-real/train.tar   CocoGlide dev's 192 pristine COCO photos (no fakes: their inpainted
                                 twins are a localisation set, not whole-image fakes)

Usage: python benchmarks/core_problem/stage_sources.py DIR [SHARED_DATA]
"""
import io
import sys
import tarfile
from pathlib import Path

from PIL import Image


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def jpeg95(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def main(root: Path) -> None:
    (root / "sd512-imagenet").mkdir(exist_ok=True)
    (root / "people-coco").mkdir(exist_ok=True)
    with tarfile.open(root / "sd512" / "train.tar") as src, \
            tarfile.open(root / "sd512-imagenet" / "train.tar", "w") as sd, \
            tarfile.open(root / "people-coco" / "train.tar", "w") as people:
        for m in src:
            if not m.isfile():
                continue
            data = src.extractfile(m).read()
            (people if m.name.startswith("real/coco/") else sd).addfile(m, io.BytesIO(data))
        with tarfile.open(root / "people" / "train.tar") as fakes:
            for m in fakes:
                if m.isfile() and m.name.startswith("fake/") and m.name.lower().endswith((".png", ".jpg")):
                    add(people, m.name.rsplit(".", 1)[0] + ".jpg", jpeg95(fakes.extractfile(m).read()))
    print("wrote", root / "sd512-imagenet" / "train.tar", root / "people-coco" / "train.tar")


def cocoglide_reals(root: Path, shared: Path) -> None:
    (root / "cocoglide-real").mkdir(exist_ok=True)
    with tarfile.open(shared / "cocoglide" / "dev.tar") as src, \
            tarfile.open(root / "cocoglide-real" / "train.tar", "w") as out:
        for m in src:
            if m.isfile() and m.name.lstrip("./").startswith("real/"):
                add(out, m.name.lstrip("./"), src.extractfile(m).read())
    print("wrote", root / "cocoglide-real" / "train.tar")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        cocoglide_reals(Path(sys.argv[1]), Path(sys.argv[2]))
