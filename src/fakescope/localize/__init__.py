"""Localisation: which pixels of an image were generated or edited (DeCLIP-style).

A frozen backbone's patch grid (optionally of an intermediate block, `?patch_layer=K`, and
optionally concatenated with a second backbone's grid) feeds a small convolutional decoder
that upsamples it to a full-resolution logit map; maps are returned at each image's
original size. See localizer.py for the geometry and training rules.
"""
from __future__ import annotations

from .decoder import ConvDecoder, auto_stages
from .localizer import (FORMAT, Localizer, LocalizerConfig, load_image, mask_array, preprocess_mask,
                        restore_map)
from .render import colormap, overlay, save_mask_png, save_overlay_png

__all__ = ["FORMAT", "ConvDecoder", "Localizer", "LocalizerConfig", "auto_stages", "colormap", "load_image",
           "mask_array", "overlay", "preprocess_mask", "restore_map", "save_mask_png", "save_overlay_png"]
