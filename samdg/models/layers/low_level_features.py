"""DAPSAM's low-level features: the backbone's stem, projected once per forward pass, shared by every adapter.

The source is the backbone context's ``"stem"`` entry, the first unit's input: patch embedding + absolute position
embedding on SAM's ViT (channels-last, (B,g,g,C)), the patch embedding on TinyViT (channels-first, (B,C0,S,S)).
Each projection is computed by the first unit that asks for it and stored in the context, where the backbone
makes it visible to every later unit (see :mod:`samdg.models.backbones.base`); nothing is kept on the module,
so gradient checkpointing and several forward passes in flight are safe.

- SAM's ViT: one Linear C -> C at the token resolution, shared by all blocks (``get(context)``).
- TinyViT (LiteMedSAM): one Linear C0 -> C_s per stage s, applied after area-averaging the patch embedding to
  the stage's token grid (``get(context, s, grid)``); stages run at 1, 1/2, 1/4 and 1/4 of the input side.

``scrambled=True`` reproduces the released DAPSAM code, which reshaped the channels-last (B,H,W,C) tensor to
(B,C,H*W) without a permute, so the "tokens" it projected were runs of consecutive numbers cutting across
pixels and channels; the result is read back in that scrambled spatial order. Off by default (per token).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SOURCE_LAYOUTS = ("channels_last", "channels_first")


class LowLevelFeatures(nn.Module):
    """Per-token projections of the context's stem.

    Args:
        in_dim: channels of the stem.
        out_dims: output channels of each projection (ViT: ``[C]``; TinyViT: the four stage widths).
        source_layout: the stem's layout, ``channels_last`` (ViT) or ``channels_first`` (TinyViT).
        scrambled: reproduce the released code's reshape bug (see the module docstring).
    Shapes: ``get(context, i, grid)`` returns (B,H,W,out_dims[i]) channels-last, (H,W) = ``grid`` (the stem's grid
    when None).
    """

    context_key = "dapsam_low_level"

    def __init__(self, in_dim: int, out_dims: Sequence[int], source_layout: str = "channels_last",
                 scrambled: bool = False) -> None:
        super().__init__()
        if source_layout not in SOURCE_LAYOUTS:
            raise ValueError(f"source_layout must be one of {SOURCE_LAYOUTS}, got {source_layout!r}")
        self.source_layout = source_layout
        self.scrambled = scrambled
        self.projections = nn.ModuleList(nn.Linear(in_dim, dim) for dim in out_dims)
        for projection in self.projections:
            nn.init.trunc_normal_(projection.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(projection.bias)

    def get(self, context: dict, index: int = 0, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The projection ``index`` of ``context["stem"]`` at ``grid``, computed once and cached in ``context``."""
        stem = context["stem"]
        if grid is None:
            grid = tuple(stem.shape[1:3]) if self.source_layout == "channels_last" else tuple(stem.shape[2:4])
        key = f"{self.context_key}.{index}.{grid[0]}x{grid[1]}"
        if key not in context:
            context[key] = self.project(stem, index, tuple(grid))
        return context[key]

    def project(self, stem: torch.Tensor, index: int, grid: tuple[int, int]) -> torch.Tensor:
        """Stem (source layout) -> (B,grid[0],grid[1],out_dims[index]) channels-last."""
        source = stem if self.source_layout == "channels_first" else stem.permute(0, 3, 1, 2)  # (B,C,h,w)
        if tuple(source.shape[2:4]) != grid:  # area average down to the consumer's token grid
            source = F.adaptive_avg_pool2d(source, grid)
        source = source.permute(0, 2, 3, 1)  # (B,H,W,C)
        projection = self.projections[index]
        if not self.scrambled:
            return projection(source)
        batch, rows, cols, channels = source.shape
        tokens = source.contiguous().reshape(batch, channels, rows * cols).transpose(1, 2)
        projected = projection(tokens)  # (B, rows*cols, out): scrambled "tokens"
        return projected.transpose(1, 2).reshape(batch, -1, rows, cols).permute(0, 2, 3, 1)
