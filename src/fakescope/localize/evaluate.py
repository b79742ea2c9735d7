"""Score a localiser on (image, mask) pairs with the constant-memory pixel metrics."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data.pairs import MaskPair
from ..evaluation.localization import PixelMetrics
from ..images import ImageError
from .localizer import Localizer

DEFAULT_LOCALIZER = "localizer"


def default_localizer_dir() -> Path:
    return Path(str(resources.files("fakescope") / "models" / DEFAULT_LOCALIZER))


def load_localizer(path: str | Path | None = None) -> Localizer:
    """The shipped default localiser, or one saved by `fakescope localizer train`: a folder or a
    Hugging Face Hub id `user/repo[@revision]` (hub.py)."""
    if path in (None, "", DEFAULT_LOCALIZER):
        return Localizer.load(default_localizer_dir())
    from ..hub import resolve_model
    return Localizer.load(resolve_model(path))


def iter_maps(loc: Localizer, sources: Sequence, chunk: int = 16) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(index, map, error) per source; an unreadable image costs only itself, not its chunk."""
    for start in range(0, len(sources), chunk):
        part = list(sources[start:start + chunk])
        try:
            for j, m in enumerate(loc.predict_maps(part)):
                yield start + j, m, None
        except ImageError:
            for j, src in enumerate(part):
                try:
                    yield start + j, loc.predict_maps([src])[0], None
                except ImageError as e:
                    yield start + j, None, e.reason


def evaluate_localizer(loc: Localizer, pairs: Sequence[MaskPair], chunk: int = 16, accumulator: PixelMetrics | None = None) -> dict:
    """Pixel metrics on the edited images (IoU / F1 at the localiser's own threshold), image-level
    AUC of the map scores on real vs edited. Pass `accumulator` to keep its curves."""
    pm = accumulator if accumulator is not None else PixelMetrics(threshold=loc.threshold)
    errors = []
    for i, m, err in iter_maps(loc, [p.image for p in pairs], chunk):
        p = pairs[i]
        if err is not None:
            errors.append({"path": p.name, "error": err})
            continue
        if p.mask is not None and p.mask.shape != m.shape:
            errors.append({"path": p.name, "error": f"mask_size: mask {p.mask.shape} vs image {m.shape}"})
            continue
        pm.update(m, p.mask, is_fake=p.label == 1)
    out = pm.compute()
    out["errors"] = errors
    return out
