"""`--localize` for videos: every sampled frame gets its edit map as an image does, and the video
gets a summary of them.

    frame_entry(map | None, error)     -> {"map_mean", "map_max"} or {"map_error"} for one frame
    summarize(frames)                  -> the video's map_mean, map_max and map_frame (the rule below)
    add_video_maps(loc, rec, ...)      `fakescope scan`: the frames of a video line, decoded again with
                                       the same sampling, mapped, their masks written

The rule: a video's map_max is its highest frame map_max (an edit visible in one frame is an
edit), its map_mean the mean of its frames' map_mean, and map_frame the time (s) of the frame
with the highest map_max. The service (service/app.py) maps the frames it already decoded and
applies the same rule.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_entry(prob_map: np.ndarray | None, error: str | None) -> dict:
    from ..evaluation.localization import map_scores

    if prob_map is None:
        return {"map_error": error or "map_failed: the localiser gave no map"}
    return {f"map_{k}": v for k, v in map_scores(prob_map).items()}


def summarize(frames: list[dict]) -> dict:
    """The video's map scores from its frames' entries (frames carry "t"); map_error when none has a map."""
    mapped = [f for f in frames if "map_max" in f]
    if not mapped:
        first = next((f["map_error"] for f in frames if "map_error" in f), "no frame was mapped")
        return {"map_error": f"video_maps_failed: no sampled frame could be mapped ({first})"}
    best = max(mapped, key=lambda f: f["map_max"])
    return {"map_mean": float(np.mean([f["map_mean"] for f in mapped])), "map_max": float(best["map_max"]),
            "map_frame": best["t"]}


def add_video_maps(loc, rec: dict, video: dict, masks: Path | None, used: set[str]) -> None:
    """Map each sampled frame of a scanned video line (`rec`, with its `video.frames`), in place:
    each frame entry gains map_mean / map_max (or map_error), the line the summary, and with
    `masks` <stem>_t<seconds>_mask.png / _overlay.png per frame (frame entries gain mask_png).
    The frames are decoded again with the scan's sampling (`video`: VideoLimits as a dict), so
    they are the frames that were scored; a video that no longer reads gets map_error."""
    from ..data.video import VideoLimits, read_video
    from ..images import ImageError
    from ..localize import save_mask_png, save_overlay_png
    from ..localize.evaluate import iter_maps

    entries = rec["video"]["frames"]
    try:
        v = read_video(rec["path"], VideoLimits(**video), loc.limits, rec["path"])
    except ImageError as e:
        rec["map_error"] = e.reason
        return
    if [round(t, 3) for t in v.times] != [f["t"] for f in entries]:  # the file changed since it was scored
        rec["map_error"] = "video_changed: the frames decoded for the map are not the frames that were scored"
        return
    stem = Path(rec["path"]).stem
    if stem in used:  # two inputs with one name: keep both, told apart by content hash
        stem = f"{stem}-{(rec['sha256'] or '')[:8]}"
    used.add(stem)
    for i, m, error in iter_maps(loc, v.frames):
        entries[i].update(frame_entry(m, error))
        if m is not None and masks is not None:
            name = f"{stem}_t{entries[i]['t']:.3f}"
            save_mask_png(m, masks / f"{name}_mask.png")
            save_overlay_png(v.frames[i], m, masks / f"{name}_overlay.png")
            entries[i]["mask_png"] = str(masks / f"{name}_mask.png")
    rec.update(summarize(entries))
