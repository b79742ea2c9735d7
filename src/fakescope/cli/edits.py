"""`fakescope make-edits` and `train-autoencoder`: (edited image, mask) pairs for localisation
from real photos (data/manipulate), and the autoencoder whose decoder re-synthesises regions."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import log


def make_edits(
    sources: List[str] = typer.Option(..., "--from", help="Real images: folder, .tar or manifest (only real-labelled images of labelled sources are used); repeatable."),
    out: Path = typer.Option(..., "--out", help="Output folder (real/, fake/, mask/, table.csv); re-running resumes."),
    per_image: int = typer.Option(1, help="Edited versions per real image."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many real images (seeded sample)."),
    autoencoder: Optional[Path] = typer.Option(None, help="Autoencoder folder for region re-synthesis (see `train-autoencoder`); default: the shipped one."),
    no_resynthesis: bool = typer.Option(False, "--no-resynthesis", help="Skip autoencoder re-synthesis (other mechanisms only)."),
    seed: int = typer.Option(0),
):
    """Make (edited image, mask) pairs from real photos: re-synthesis, copy-move, splice, resampling, blur, noise."""
    import random

    from ..data.manipulate import default_autoencoder_dir, generate_dataset, load_autoencoder
    from ..data.sources import read_reals

    samples = read_reals(sources)  # a labelled source's reals; a plain folder of photos, all taken as real
    if limit and len(samples) > limit:
        samples = random.Random(seed).sample(samples, limit)
    if autoencoder is None and not no_resynthesis and (default_autoencoder_dir() / "config.json").exists():
        autoencoder = default_autoencoder_dir()
    ae = load_autoencoder(autoencoder) if autoencoder and not no_resynthesis else None
    report = generate_dataset(samples, out, n_per_image=per_image, seed=seed, autoencoder=ae, log=log.info)
    log.info(f"{report}")


def train_autoencoder(
    sources: List[str] = typer.Option(..., "--from", help="Real images (as for make-edits); repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder for config.json + model.safetensors."),
    steps: int = typer.Option(1500),
    batch_size: int = typer.Option(8),
    crop: int = typer.Option(96),
    limit: Optional[int] = typer.Option(400, help="Use at most this many images."),
    seed: int = typer.Option(0),
):
    """Train the small autoencoder whose decoder re-synthesises edited regions in `make-edits`."""
    import random

    import numpy as np

    from ..data.manipulate import save_autoencoder, train_autoencoder as fit
    from ..data.sources import read_reals
    from ..images import ImageError, decode_image
    from ..progress import progress

    samples = read_reals(sources)  # as make-edits reads them
    if limit and len(samples) > limit:
        samples = random.Random(seed).sample(samples, limit)
    images = []
    for s in samples:
        try:
            images.append(np.asarray(decode_image(s.data if s.data is not None else s.path)))
        except ImageError as e:
            log.warning(f"skipped {s.path}: {e}")

    def on_step(i: int, loss: float) -> None:
        bar.update(1)
        if i % 100 == 0:
            log.info(f"step {i}: L1 {loss:.4f}")

    with progress(total=steps, desc="train-autoencoder", min_total=1, unit="step") as bar:
        model = fit(images, steps=steps, batch_size=batch_size, crop=crop, seed=seed, on_step=on_step)
    save_autoencoder(model, out)
    log.info(f"saved {out}")
