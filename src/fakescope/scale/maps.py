"""`--localize` for scan records: where each image was edited, as map scores on its record.

    add_maps(localizer, records, masks, used, video)   what `fakescope scan --localize` runs on each
                                                       batch: map_mean / map_max (or map_error) per
                                                       record, masks and overlays written
"""
from __future__ import annotations

from pathlib import Path

DECODED_AT_ONCE = 8  # images held at full resolution at a time


def add_maps(loc, recs: list[dict], masks: Path | None = None, used: set[str] | None = None,
             video: dict | None = None, sources: list | None = None) -> None:
    """Localise the images of one batch that could be read; an image the localiser cannot use
    gets its error in `map_error` and keeps its detection score. Each image is decoded once
    here, for both the localiser and its overlay. A video's frames are mapped one by one
    (video_maps.py; `video`: the scan's frame sampling, data/video.py VideoLimits as a dict).
    `masks`: a folder for <name>_mask.png and <name>_overlay.png; `used`: the names written so
    far (shared across batches, so two inputs with one name both keep their files). `sources`: each
    record's input as a Sample (its bytes, for a tar member or a Hugging Face row) or a failed Item;
    without them an image is read from its path."""
    from ..evaluation.localization import map_scores
    from ..images import ImageError
    from ..localize import load_image, save_mask_png, save_overlay_png
    from ..localize.evaluate import iter_maps
    from ..localize.verdict import apply as apply_edit_rule
    from .video_maps import add_video_maps

    used = set() if used is None else used
    todo = []  # (record, where its image is)
    for rec, src in zip(recs, sources or [None] * len(recs)):
        if rec["error"] is not None:
            continue
        if "video" in rec:
            add_video_maps(loc, rec, video, masks, used)
            continue
        if getattr(src, "error", None) is not None:  # its bytes could not be read
            rec["map_error"] = src.error
            continue
        data = getattr(src, "data", None)
        todo.append((rec, data if data is not None else rec["path"]))
    # a few images decoded at a time: a batch of 50 MP photos held at full resolution at once would
    # not fit in memory
    for lo in range(0, len(todo), DECODED_AT_ONCE):
        ready, images = [], []
        for rec, where in todo[lo:lo + DECODED_AT_ONCE]:
            try:
                images.append(load_image(where, loc.limits))
                ready.append(rec)
            except ImageError as e:
                rec["map_error"] = e.reason
        for i, m, error in iter_maps(loc, images, chunk=DECODED_AT_ONCE):
            rec = ready[i]
            if error is not None:
                rec["map_error"] = error
                continue
            rec.update({f"map_{k}": v for k, v in map_scores(m).items()})
            apply_edit_rule(loc, rec, m)  # edit_score / edited; a confident edit region is not "real"
            if masks is not None:
                stem = Path(rec["path"]).stem
                if stem in used:  # two inputs with one name: keep both, told apart by content hash
                    stem = f"{stem}-{(rec['sha256'] or '')[:8]}"
                used.add(stem)
                save_mask_png(m, masks / f"{stem}_mask.png")
                save_overlay_png(images[i], m, masks / f"{stem}_overlay.png")
                rec["mask_png"] = str(masks / f"{stem}_mask.png")
