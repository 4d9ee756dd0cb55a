"""DAPSAM's low-level features: the backbone's stem, projected once per forward pass, shared by every adapter.

:class:`LowLevelFeatures` sits in the backbone's ``stem_hook``. It receives the stem, (B,C0,h,w) channels-first
(patch embedding + absolute position embedding on SAM's ViT, the patch embedding on TinyViT), and stores one
projection per target (width, grid) in the context, channels-last, where the adapters of every block read it
(:func:`low_level`). A target grid smaller than the stem's is reached by area-averaging first:

- SAM's ViT: one target, Linear C -> C at the token grid, shared by all blocks;
- TinyViT: one target per stage, Linear C0 -> C_s on the stem averaged to the stage's grid (stages run at 1,
  1/2, 1/4 and 1/4 of the stem's side).

Nothing is kept on the module, so gradient checkpointing and several forward passes in flight are safe.

``scrambled=True`` reproduces the released DAPSAM code, which reshaped the channels-last (B,H,W,C) tensor to
(B,C,H*W) without a permute, so the "tokens" it projected were runs of consecutive numbers cutting across
pixels and channels; the result is read back in that scrambled spatial order. Off by default (per token).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOW_LEVEL_KEY = "dapsam_low_level"


def low_level(context: dict, index: int) -> torch.Tensor:
    """Projection ``index`` of the stem, (B,H,W,C) channels-last, as stored by :class:`LowLevelFeatures`."""
    return context[LOW_LEVEL_KEY][index]


class LowLevelFeatures(nn.Module):
    """Per-token projections of the stem, one per target; a stem hook.

    Args:
        in_dim: channels of the stem.
        targets: (out_dim, (H, W)) of each projection.
        scrambled: reproduce the released code's reshape bug (see the module docstring).
    Shapes: ``forward(stem (B,in_dim,h,w), context)`` returns the stem unchanged and sets
    ``context[LOW_LEVEL_KEY][i]`` to (B,H_i,W_i,out_dim_i).
    """

    def __init__(self, in_dim: int, targets: Sequence[tuple[int, tuple[int, int]]], scrambled: bool = False) -> None:
        super().__init__()
        self.scrambled = scrambled
        self.grids = [tuple(grid) for _, grid in targets]
        self.projections = nn.ModuleList(nn.Linear(in_dim, dim) for dim, _ in targets)
        for projection in self.projections:
            nn.init.trunc_normal_(projection.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(projection.bias)

    def forward(self, stem: torch.Tensor, context: dict) -> torch.Tensor:
        context[LOW_LEVEL_KEY] = [self.project(stem, index) for index in range(len(self.projections))]
        return stem

    def project(self, stem: torch.Tensor, index: int) -> torch.Tensor:
        """Stem (B,C,h,w) -> (B,H,W,out_dim) channels-last at target ``index``'s grid (H,W)."""
        grid = self.grids[index]
        source = stem if tuple(stem.shape[2:4]) == grid else F.adaptive_avg_pool2d(stem, grid)
        source = source.permute(0, 2, 3, 1)  # (B,H,W,C)
        projection = self.projections[index]
        if not self.scrambled:
            return projection(source)
        batch, rows, cols, channels = source.shape
        tokens = source.contiguous().reshape(batch, channels, rows * cols).transpose(1, 2)
        projected = projection(tokens)  # (B, rows*cols, out): scrambled "tokens"
        return projected.transpose(1, 2).reshape(batch, -1, rows, cols).permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"grids={self.grids}, scrambled={self.scrambled}"
