"""A DeCLIP-style convolutional decoder: a patch-feature grid in, a one-channel logit map out.

DeCLIP (Smeu et al., 2024) reads the patch tokens of one block of a frozen CLIP ViT as an
(h, w) grid and upsamples it with conv + BatchNorm + ReLU + x2 bilinear stages to a
full-resolution manipulation mask; its fusion variant concatenates a ResNet-50 feature map
resized to the ViT grid. This is our own version of that design:

    [second grid --bilinear--> first grid size, concatenated on channels]
    BatchNorm on the input channels        (standardises frozen features of any scale)
    `stages` x [Conv3x3 -> BatchNorm -> ReLU -> x2 bilinear upsample]
    Conv1x1 -> 1 logit channel
    bilinear resize to the exact output size (the backbone's input resolution)

Stage i has max(width // 2**i, 16) channels (DeCLIP halves its widths the same way), so
the expensive high-resolution stages stay narrow. With `stages=None` the depth is chosen
so the last stage reaches at least half the output size (`auto_stages`); the final
interpolation then covers at most a factor 2.

`PRESETS["declip-conv20"]` is DeCLIP's best decoder ("conv-20", models/clip_models.py): no input
BatchNorm; 4 stages of widths 512, 256, 128, 64, each 5 x [Conv5x5 -> BatchNorm -> ReLU] then x2
bilinear; a final Conv5x5 to one channel (a 16 x 16 grid of ViT-L/14 at 224 px -> 256 x 256).
Their convolutions carry a bias, ours do not: BatchNorm right after a convolution subtracts any
constant per channel, so the bias has no effect (fewer parameters, the same functions).

Block index: DeCLIP names CLIP ViT blocks `layer0`..`layer23` (counted from 0) and reads `layer20`
of ViT-L/14; fakescope's `?patch_layer=K` counts from 1 (K = 1 is the first block, -1 the last), so
DeCLIP's block is `hf-clip:openai/clip-vit-large-patch14?patch_layer=21`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

MIN_WIDTH = 16

# Constructor options beyond in_channels / grid / output_size / second_channels.
PRESETS: dict[str, dict] = {
    "fakescope": {"convs_per_stage": 1, "kernel": 3, "input_norm": True, "head_kernel": 1, "widths": None},
    "declip-conv20": {"convs_per_stage": 5, "kernel": 5, "input_norm": False, "head_kernel": 5,
                      "widths": [512, 256, 128, 64]},
}


def auto_stages(grid: int, output_size: int) -> int:
    """Fewest x2 stages taking a `grid`-wide map to >= output_size / 2 (0 if it already is)."""
    if grid <= 0 or output_size <= 0:
        raise ValueError(f"grid and output_size must be positive, got {grid} and {output_size}")
    return max(0, math.ceil(math.log2(output_size / (2 * grid)))) if 2 * grid < output_size else 0


def stage_widths(width: int, stages: int) -> list[int]:
    return [max(width // 2 ** i, MIN_WIDTH) for i in range(stages)]


class ConvDecoder(nn.Module):
    """(N, C, h, w) features [+ (N, C2, h2, w2) second features] -> (N, 1, H, W) logits.

    in_channels:     channels of the main grid.
    width:           channels of the first stage (halved at each further stage, floor 16).
    stages:          number of conv + x2 upsample stages; None: `auto_stages(grid, output_size)`.
    grid:            side of the main grid (only read when stages is None).
    output_size:     side of the output map; None: the last stage's resolution (no final resize).
    second_channels: channels of an optional second grid, resized to the main grid and concatenated.
    widths:          explicit channels per stage (then `width` and `stages` are not read).
    convs_per_stage, kernel: [Conv(kernel) -> BatchNorm -> ReLU] blocks per stage and their kernel size.
    input_norm:      BatchNorm on the input channels.   head_kernel: kernel of the final 1-channel conv.
    """

    def __init__(self, in_channels: int, width: int = 256, stages: int | None = None, *,
                 grid: int | None = None, output_size: int | None = None, second_channels: int = 0,
                 widths: list[int] | None = None, convs_per_stage: int = 1, kernel: int = 3,
                 input_norm: bool = True, head_kernel: int = 1):
        super().__init__()
        if in_channels <= 0 or width <= 0 or second_channels < 0:
            raise ValueError("in_channels and width must be positive, second_channels >= 0")
        if convs_per_stage < 1 or kernel < 1 or kernel % 2 == 0 or head_kernel < 1 or head_kernel % 2 == 0:
            raise ValueError("convs_per_stage must be >= 1, kernel and head_kernel odd and positive")
        if widths is not None:
            widths = [int(w) for w in widths]
            if not widths or min(widths) < 1:
                raise ValueError(f"widths must be positive channel counts, got {widths}")
            stages = len(widths)
        elif stages is None:
            if grid is None or output_size is None:
                raise ValueError("stages=None needs grid and output_size to choose the depth")
            stages = auto_stages(grid, output_size)
        if stages < 0:
            raise ValueError(f"stages must be >= 0, got {stages}")
        self.in_channels, self.width, self.stages = int(in_channels), int(width), int(stages)
        self.output_size = None if output_size is None else int(output_size)
        self.second_channels = int(second_channels)
        self.widths = None if widths is None else list(widths)
        self.convs_per_stage, self.kernel, self.head_kernel = int(convs_per_stage), int(kernel), int(head_kernel)
        channels = self.in_channels + self.second_channels
        self.input_norm = nn.BatchNorm2d(channels) if input_norm else nn.Identity()
        blocks = []
        for out in self.widths or stage_widths(self.width, self.stages):
            layers: list[nn.Module] = []
            for _ in range(self.convs_per_stage):  # one conv: the module indices of decoders saved before presets
                layers += [nn.Conv2d(channels, out, self.kernel, padding=self.kernel // 2, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels, 1, self.head_kernel, padding=self.head_kernel // 2)

    def config(self) -> dict:
        """Constructor arguments that rebuild this exact architecture."""
        return {"in_channels": self.in_channels, "width": self.width, "stages": self.stages,
                "output_size": self.output_size, "second_channels": self.second_channels,
                "widths": self.widths, "convs_per_stage": self.convs_per_stage, "kernel": self.kernel,
                "input_norm": isinstance(self.input_norm, nn.BatchNorm2d), "head_kernel": self.head_kernel}

    def forward(self, x: torch.Tensor, second: torch.Tensor | None = None,
                size: int | tuple[int, int] | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, h, w) features, got {tuple(x.shape)}")
        if self.second_channels:
            if second is None or second.ndim != 4 or second.shape[1] != self.second_channels:
                got = None if second is None else tuple(second.shape)
                raise ValueError(f"expected second features (N, {self.second_channels}, h, w), got {got}")
            if second.shape[2:] != x.shape[2:]:
                second = F.interpolate(second, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, second.to(x.dtype)], dim=1)
        elif second is not None:
            raise ValueError("this decoder was built without second_channels")
        x = self.input_norm(x)
        for block in self.blocks:
            x = F.interpolate(block(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.head(x)
        size = size if size is not None else self.output_size
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if tuple(x.shape[2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x
