"""A UNETR-style convolutional decoder over several intermediate encoder features ("taps").

Each tap gets its own branch that projects it to the width of its decoder level and brings it to that level's
resolution (transposed 2x2 convolutions up, strided residual blocks down). The coarsest level can be fused with
a "guide" tensor of the same resolution (DeSAM fuses SAM's prompt-conditioned mask embedding there). The decoder
then climbs level by level: transposed conv x2, concatenation with the level's branch output, residual SE block.
A 1x1 convolution turns the finest level into ``out_channels`` logits.

Used by DeSAM's prompt-decoupled mask module; nothing in it is DeSAM-specific.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from samdg.models.layers.se_blocks import ResidualSEBlock


def transposed_upsample(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """(B,in,H,W) -> (B,out,2H,2W): a 2x2 transposed convolution with stride 2, no bias."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)


class TapBranch(nn.Module):
    """(B,C,h,w) -> (B,width,h*2^scale,w*2^scale).

    ``scale >= 0``: a residual SE block C -> width, then ``scale`` times [transposed conv x2 -> residual SE block].
    ``scale < 0``: one residual SE block with stride 2^-scale.
    """

    def __init__(self, in_channels: int, width: int, scale: int, se_reduction: int = 16) -> None:
        super().__init__()
        stride = 2 ** (-scale) if scale < 0 else 1
        self.project = ResidualSEBlock(in_channels, width, stride=stride, se_reduction=se_reduction)
        self.upsample = nn.ModuleList(
            nn.Sequential(transposed_upsample(width, width), ResidualSEBlock(width, width, se_reduction=se_reduction))
            for _ in range(max(0, scale))
        )

    def forward(self, tap: torch.Tensor) -> torch.Tensor:
        x = self.project(tap)
        for step in self.upsample:
            x = step(x)
        return x


class UpFuseBlock(nn.Module):
    """(B,in,H,W) + skip (B,out,2H,2W) -> (B,out,2H,2W): upsample, concatenate, residual SE block 2*out -> out."""

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 16) -> None:
        super().__init__()
        self.upsample = transposed_upsample(in_channels, out_channels)
        self.fuse = ResidualSEBlock(2 * out_channels, out_channels, se_reduction=se_reduction)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.upsample(x), skip], dim=1))


class TapPyramidDecoder(nn.Module):
    """Taps (deepest first) [+ guide] -> logits (B,out_channels,R*2^(L-1),R*2^(L-1)), R = coarsest resolution.

    Args:
        tap_channels: channels of each tap, deepest first; tap ``d`` feeds decoder level ``d``.
        widths: channels of each level, coarsest first (DeSAM: 256, 128, 64). Same length as ``tap_channels``.
        out_channels: logits channels of the 1x1 head.
        tap_scales: per tap, log2(level resolution / tap resolution), where level ``d`` runs at R*2^d. ``None``:
            every tap has the coarsest resolution R (plain ViT taps), i.e. ``scale[d] = d``.
        guide_channels: channels of a tensor (B,G,R,R) concatenated (first) with level 0 and fused by a
            residual SE block G + widths[0] -> widths[0]. 0: no guide.
    """

    def __init__(self, tap_channels: Sequence[int], widths: Sequence[int], out_channels: int,
                 tap_scales: Sequence[int] | None = None, guide_channels: int = 0, se_reduction: int = 16) -> None:
        super().__init__()
        if len(tap_channels) != len(widths) or not widths:
            raise ValueError(f"need one width per tap, got {len(tap_channels)} taps and {len(widths)} widths")
        scales = list(range(len(widths))) if tap_scales is None else list(tap_scales)
        if len(scales) != len(widths):
            raise ValueError(f"need one scale per tap, got {len(scales)} for {len(widths)} taps")
        self.branches = nn.ModuleList(
            TapBranch(c, w, s, se_reduction) for c, w, s in zip(tap_channels, widths, scales)
        )
        self.guide_fusion = None
        if guide_channels:
            self.guide_fusion = ResidualSEBlock(guide_channels + widths[0], widths[0], se_reduction=se_reduction)
        self.up_blocks = nn.ModuleList(
            UpFuseBlock(widths[d], widths[d + 1], se_reduction) for d in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[-1], out_channels, kernel_size=1, bias=False)

    def branch_outputs(self, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The guide-independent part: one (B,widths[d],R*2^d,R*2^d) tensor per level.

        Split out so that a caller decoding many guides for one image (DeSAM's grid of prompts) runs it once.
        """
        if len(taps) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} taps, got {len(taps)}")
        return [branch(tap) for branch, tap in zip(self.branches, taps)]

    def decode(self, levels: Sequence[torch.Tensor], guide: torch.Tensor | None = None) -> torch.Tensor:
        """Branch outputs (from :meth:`branch_outputs`) [+ guide (B,G,R,R)] -> logits (B,out,R*2^(L-1),...).

        ``levels`` may have batch 1 while the guide has batch N (one image, N prompts): they are broadcast.
        """
        x = levels[0]
        if self.guide_fusion is not None:
            if guide is None:
                raise ValueError("this decoder was built with a guide; pass one")
            x = self.guide_fusion(torch.cat([guide, x.expand(guide.shape[0], -1, -1, -1)], dim=1))
        for up, skip in zip(self.up_blocks, levels[1:]):
            x = up(x, skip.expand(x.shape[0], -1, -1, -1))
        return self.head(x)

    def forward(self, taps: Sequence[torch.Tensor], guide: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.branch_outputs(taps), guide)
