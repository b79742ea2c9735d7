"""Localisation: which pixels of an image were generated or edited (DeCLIP-style).

A frozen backbone's patch grid (optionally of an intermediate block, `?patch_layer=K`, and
optionally concatenated with a second backbone's grid) feeds a small convolutional decoder
that upsamples it to a full-resolution logit map; maps are returned at each image's
original size. See localizer.py for the geometry and training rules.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# Lazy: `fakescope.localize.commands` is imported by the CLI at start-up, and decoder.py imports torch.
_EXPORTS = {"ConvDecoder": "decoder", "auto_stages": "decoder",
            **{n: "localizer" for n in ("FORMAT", "Localizer", "LocalizerConfig", "load_image", "mask_array",
                                        "preprocess_mask", "restore_map")},
            **{n: "render" for n in ("colormap", "overlay", "save_mask_png", "save_overlay_png")}}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
