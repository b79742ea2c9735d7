"""Aligned fakes (issue 17, item 2): real photos and their re-synthesis by the project's autoencoder.

B-Free (CVPR 2025) and "Aligned datasets" (ICLR 2025) train on a real photo and a generated version
of the same photo, post-processed identically, so content and format cannot tell them apart and
only the generator's decoder does. Here the generator is fakescope's packaged TinyAutoencoder (latent
at 1/8 resolution, nearest-neighbour up-sampling, the shape of a latent-diffusion VAE).

For each real image of the given sources (at most N per source, seeded), the image is resized so its
shorter side is 256 px (a full-size camera photo is too large to re-synthesise on this CPU), then
written twice, both as PNG:

  OUT/real/<source>/<k>.png    the resized photo
  OUT/fake/ae/<source>-<k>.png its autoencoder reconstruction
  OUT/manifest.csv             path,text,group: both images of a pair carry the original photo's
                               caption (when its source has one) and group key, so a protocol that holds the original out of training
                               holds its twins out too (evaluation/protocols.py without_families_of)

Usage: python benchmarks/core_problem/stage_aligned.py OUT.tar N SOURCE.tar [SOURCE.tar ...]
       (--manifest-only: append the manifest to an OUT.tar made without one, same arguments)
"""
import csv
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from fakescope.data.manipulate.autoencoder import default_autoencoder_dir, load_autoencoder
from fakescope.data.sources import load_labelled


def add(tar: tarfile.TarFile, name: str, img: Image.Image) -> None:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    info = tarfile.TarInfo(name)
    info.size, info.mtime = buf.tell(), 0
    buf.seek(0)
    tar.addfile(info, buf)


def chosen(per_source: int, sources: list[str]):
    """(source name, k, sample) of the reals re-synthesised, the same on every run."""
    rng = np.random.default_rng(0)
    for src in sources:
        name = Path(src).parent.name
        reals = [s for s in load_labelled(src) if s.label == 0]
        for k in sorted(rng.permutation(len(reals))[:per_source]):
            yield name, int(k), reals[k]


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def manifest(rows) -> bytes:
    """rows: (path, text or None, group)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "text", "group"])
    w.writerows((p, t or "", g) for p, t, g in rows)
    return buf.getvalue().encode()


def main(out: Path, per_source: int, sources: list[str], manifest_only: bool = False) -> None:
    rows = []
    if manifest_only:
        rows = [(p, s.text, s.group_key()) for name, k, s in chosen(per_source, sources)
                for p in (f"real/{name}/{k}.png", f"fake/ae/{name}-{k}.png")]
        with tarfile.open(out, "a") as tar:
            add_bytes(tar, "manifest.csv", manifest(rows))
        return
    ae = load_autoencoder(default_autoencoder_dir())
    with tarfile.open(out, "w") as tar:
        for name, k, s in chosen(per_source, sources):
            img = Image.open(io.BytesIO(s.data) if s.data is not None else s.path).convert("RGB")
            f = 256 / min(img.size)
            img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BICUBIC)
            add(tar, f"real/{name}/{k}.png", img)
            add(tar, f"fake/ae/{name}-{k}.png", Image.fromarray(ae.reconstruct(np.asarray(img))))
            rows += [(f"real/{name}/{k}.png", s.text, s.group_key()), (f"fake/ae/{name}-{k}.png", s.text, s.group_key())]
        add_bytes(tar, "manifest.csv", manifest(rows))
    print(f"{len(rows) // 2} pairs from {len(sources)} sources", flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--manifest-only"]
    main(Path(args[0]), int(args[1]), args[2:], manifest_only="--manifest-only" in sys.argv)
