"""`generate_dataset`: real photos -> a CocoGlide-like folder (real/, fake/, mask/, table.csv), resumable."""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ...files import replacing
from ...images import ImageError, decode_image
from ..pair_table import PairTable
from ..samples import FAKE, Sample
from .autoencoder import TinyAutoencoder, load_autoencoder
from .common import MAX_SIDE, _seed_from
from .edits import ManipulationConfig, choose_mechanism, make_pair, make_real

TABLE_COLUMNS = ("real", "fake", "mask", "prompt", "mechanism", "mask_kind", "area")
MIN_SIDE = 16


@dataclass
class GenerateReport:
    out_dir: Path
    images: int = 0                 # real input images considered
    fakes_written: int = 0
    reals_written: int = 0
    skipped: int = 0                # outputs that already existed (resume)
    ignored_fakes: int = 0          # input samples labelled fake: never edited
    errors: list = field(default_factory=list)  # [(path, "<code>: <message>")]: inputs skipped
    notes: list = field(default_factory=list)   # things worth knowing that are not errors


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def output_names(samples: Sequence[Sample]) -> list[str]:
    """File stems for the outputs: the input's stem, plus a hash of its full path when stems collide."""
    stems = [_safe_name(Path(s.path.split("::")[-1]).stem) for s in samples]
    seen: dict[str, int] = {}
    for st in stems:
        seen[st] = seen.get(st, 0) + 1
    return [st if seen[st] == 1 else f"{st}_{hashlib.sha1(s.path.encode()).hexdigest()[:8]}"
            for st, s in zip(stems, samples)]


def _load_rgb(sample: Sample, max_side: int) -> np.ndarray:
    # JPEG DCT scaling decodes big photos straight at >= max_side (both sides), before the resize
    img = decode_image(sample.data if sample.data is not None else sample.path, name=sample.path,
                       draft_size=max_side)
    if max(img.size) > max_side:
        f = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    a = np.asarray(img, dtype=np.uint8)
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{a.shape[1]}x{a.shape[0]} image, too small to edit (min side {MIN_SIDE})", sample.path)
    return a


def _save_png(a: np.ndarray, path: Path) -> None:
    with replacing(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")


def generate_dataset(samples: Iterable, out_dir: str | os.PathLike, n_per_image: int = 1,
                     config: ManipulationConfig = ManipulationConfig(), seed: int = 0,
                     autoencoder: TinyAutoencoder | str | os.PathLike | None = None,
                     real_fraction: float = 0.3, max_side: int = MAX_SIDE,
                     log: Callable[[str], None] | None = None) -> GenerateReport:
    """Edit real images into a CocoGlide-like folder:

        out_dir/real/<name>.png       the real image after the same final re-encoding (zero mask)
        out_dir/fake/<name>_<k>.png   k = 0 .. n_per_image-1, one random edit each
        out_dir/mask/<name>_<k>.png   its mask, 0/255 8-bit PNG
        out_dir/table.csv             real,fake,mask,prompt,mechanism,mask_kind,area (paths relative
                                      to out_dir; prompt empty; area = masked fraction)

    `samples`: Sample records (e.g. from `load_labelled`) or paths. Samples labelled fake are
    ignored (their untouched pixels are not real). <name> is the input's file stem (plus a short
    hash of its path when two inputs share a stem).

    `real_fraction`: the expected fraction of real images among the outputs. Each input's real
    copy is written with probability p = real_fraction * n_per_image / (1 - real_fraction), capped
    at 1 (so 0.3 with one edit per image gives p = 0.43; with 3 edits per image every real is
    written and reals are 25%). The table row of an image without a real copy has `real` empty.

    Images whose longer side exceeds `max_side` (default 1024) are first downscaled (JPEG DCT
    scaling where it keeps both sides >= max_side, then Lanczos) so it equals max_side: edits stay at a scale the localiser sees, and generation stays fast. The
    real copy goes through the same resize, so resampling is not a class cue.

    Reproducible and resumable: every output has its own seed (from `seed`, the name, k), so an
    output that already exists (file present, and for fakes their row in table.csv) is skipped and
    a rerun only fills in what is missing, identically. Files are written atomically; rows are
    appended as they are made and the table is rewritten in input order at the end.
    Splice donors are other inputs, chosen per edit by seed. An input that cannot be decoded (or
    fails to edit) is reported in `errors` (and through `log`, default stderr) and skipped.
    Resynthesize needs `autoencoder` (a model, or a directory for `load_autoencoder`); without one
    it is left out of the mechanism mix (noted in `notes`).
    """
    if n_per_image < 1:
        raise ValueError("n_per_image must be >= 1")
    if not 0 <= real_fraction < 1:
        raise ValueError("real_fraction must be in [0, 1)")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if isinstance(autoencoder, (str, os.PathLike)):
        autoencoder = load_autoencoder(autoencoder)
    out = Path(out_dir)
    report = GenerateReport(out)
    items: list[Sample] = []
    for s in samples:
        s = s if isinstance(s, Sample) else Sample(path=os.fspath(s))
        if s.label == FAKE:
            report.ignored_fakes += 1
        else:
            items.append(s)
    report.images = len(items)
    if report.ignored_fakes:
        report.notes.append(f"{report.ignored_fakes} samples labelled fake were ignored")
    if autoencoder is None and config.mechanisms.get("resynthesize", 0) > 0:
        report.notes.append("resynthesize left out: no autoencoder given")
    if len(items) < 2 and config.mechanisms.get("splice", 0) > 0:
        report.notes.append("splice left out: it needs at least two input images")
    for note in report.notes:
        log(f"note: {note}")

    for sub in ("real", "fake", "mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    table = PairTable(out / "table.csv", TABLE_COLUMNS)
    rows = table.rows
    p_real = min(1.0, real_fraction * n_per_image / (1 - real_fraction))
    names = output_names(items)

    def report_error(path: str, message: str) -> None:
        report.errors.append((path, message))
        log(f"skipped {path}: {message}")

    from ...progress import progress

    order: list[str] = []
    with progress(total=len(items), desc="manipulate") as bar:
        for i, (sample, name) in enumerate(zip(items, names)):
            bar.update(1)
            real_rng = np.random.default_rng(_seed_from(seed, name, "real"))
            want_real = bool(real_rng.random() < p_real)
            real_rel = f"real/{name}.png"
            need_real = want_real and not (out / real_rel).is_file()
            todo = []
            for k in range(n_per_image):
                fake_rel = f"fake/{name}_{k}.png"
                order.append(fake_rel)
                done = fake_rel in rows and (out / fake_rel).is_file() and (out / rows[fake_rel]["mask"]).is_file()
                if done:
                    report.skipped += 1
                else:
                    todo.append(k)
            if want_real and not need_real:
                report.skipped += 1
            if not todo and not need_real:
                continue
            try:
                img = _load_rgb(sample, max_side)
            except ImageError as e:
                report_error(sample.path, e.reason)
                continue
            try:
                if need_real:
                    real, _ = make_real(img, real_rng, config)
                    _save_png(real, out / real_rel)
                    report.reals_written += 1
                for k in todo:
                    fake_rel, mask_rel = f"fake/{name}_{k}.png", f"mask/{name}_{k}.png"
                    choice = np.random.default_rng(_seed_from(seed, name, k, "choice"))
                    mech = choose_mechanism(choice, config, autoencoder, has_donors=len(items) > 1)
                    donors = []
                    if mech == "splice":
                        j = int(choice.integers(len(items) - 1))
                        j += j >= i
                        try:
                            donors.append(_load_rgb(items[j], max_side))
                        except ImageError as e:
                            report.notes.append(f"{fake_rel}: donor {items[j].path} unusable ({e.code}); "
                                                "another mechanism used")
                            mech = choose_mechanism(choice, config, autoencoder, has_donors=False)
                    rng = np.random.default_rng(_seed_from(seed, name, k))
                    fake, mask, info = make_pair(img, rng, config, autoencoder, donors, mechanism=mech)
                    _save_png(mask * np.uint8(255), out / mask_rel)
                    _save_png(fake, out / fake_rel)
                    row = {"real": real_rel if want_real else "", "fake": fake_rel, "mask": mask_rel, "prompt": "",
                           "mechanism": info["mechanism"], "mask_kind": info["mask_kind"],
                           "area": f"{info['area']:.4f}"}
                    table.add(row)
                    report.fakes_written += 1
            except Exception as e:  # one image's failure is that image's problem only
                report_error(sample.path, f"manipulation_failed: {type(e).__name__}: {e}")

    table.rewrite(order)  # input order, then rows of earlier runs for inputs not given this time
    return report

