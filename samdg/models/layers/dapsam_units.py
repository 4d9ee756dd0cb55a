"""Encoder units with DAPSAM's adapters, installed with ``Backbone.wrap_units``.

Both wrappers take the backbone context (``takes_context = True``) to reach the low-level features
(:class:`samdg.models.layers.low_level_features.LowLevelFeatures`, computed once per pass from the context's
``stem``), and re-compose the wrapped block from its own branches (``attention_branch``, ``norm2``/``mlp``,
``conv_branch``), so no block is copied. The frozen block weights keep their names under ``.unit``.

Per attention block, with x the block input and L the low-level features at the block's grid:

    x  = x + MLP_pre(filter(0.5 x + L))                 generalised adapter, before the block
    x  = x + attention(x)                               (TinyViT: then its depthwise conv branch)
    xn = norm(x)                                        the normalised input of the block's MLP
    x  = x + MLP(xn) + 0.5 MLP_par(filter(xn + L))      parallel adapter beside the MLP

SAM's ViT: every unit is one block (:class:`AdaptedViTBlock`). TinyViT: every unit is a stage
(:class:`AdaptedTinyViTStage`) whose blocks each get both adapters at the stage's width and grid; the MBConv blocks
of stage 0 have no MLP, so they get the generalised adapter only.
"""

from __future__ import annotations

import torch
from torch import nn

from samdg.models.layers.adapters import GeneralizedAdapter, ParallelAdapter
from samdg.models.layers.low_level_features import LowLevelFeatures


class _UsesLowLevelFeatures(nn.Module):
    takes_context = True

    def __init__(self, low_level: LowLevelFeatures) -> None:
        super().__init__()
        # A plain reference: the features are registered once, by the method that owns them.
        self.__dict__["low_level"] = low_level


class AdaptedViTBlock(_UsesLowLevelFeatures):
    """A SAM ViT block (``samdg.models.backbones.vit.ViTBlock``) with DAPSAM's two adapters.

    Shapes: x (B,H,W,C) -> (B,H,W,C); the low-level features are read with ``low_level.get(context)``.
    """

    def __init__(self, block: nn.Module, low_level: LowLevelFeatures, hidden_ratio: float, width_gated: bool = False,
                 input_scale: float = 0.5, parallel_scale: float = 0.5) -> None:
        super().__init__(low_level)
        for part in ("attention_branch", "norm2", "mlp"):
            if not hasattr(block, part):
                raise TypeError(f"AdaptedViTBlock needs a ViT block with '{part}', got {type(block).__name__}")
        dim = block.norm2.normalized_shape[0]
        hidden_dim = max(1, int(dim * hidden_ratio))
        self.unit = block
        self.parallel_scale = parallel_scale
        self.generalized_adapter = GeneralizedAdapter(dim, hidden_dim, input_scale, width_gated)
        self.parallel_adapter = ParallelAdapter(dim, hidden_dim)

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        low = self.low_level.get(context)
        x = self.generalized_adapter(x, low)
        x = x + self.unit.attention_branch(x)
        xn = self.unit.norm2(x)
        return x + self.unit.mlp(xn) + self.parallel_scale * self.parallel_adapter(xn, low)


class AdaptedTinyViTStage(_UsesLowLevelFeatures):
    """A TinyViT stage (``ConvStage`` or ``AttentionStage`` of ``samdg.models.backbones.tinyvit``) with DAPSAM's
    adapters on each block; its low-level features are projection ``stage_index`` at the stage's grid.

    Shapes: x (B,C,H,W) -> the stage's output (B,C',H',W') (after its patch merging, if any).
    """

    def __init__(self, stage: nn.Module, stage_index: int, low_level: LowLevelFeatures, hidden_ratio: float,
                 width_gated: bool = False, input_scale: float = 0.5, parallel_scale: float = 0.5) -> None:
        super().__init__(low_level)
        blocks = list(stage.blocks)
        self.attention_blocks = all(hasattr(block, "attention_branch") for block in blocks)
        if not self.attention_blocks and any(hasattr(block, "attention_branch") for block in blocks):
            raise TypeError("AdaptedTinyViTStage: a stage mixes attention and convolution blocks")
        dim = low_level.projections[stage_index].out_features
        hidden_dim = max(1, int(dim * hidden_ratio))
        self.unit = stage
        self.stage_index = stage_index
        self.parallel_scale = parallel_scale
        self.generalized_adapters = nn.ModuleList(
            GeneralizedAdapter(dim, hidden_dim, input_scale, width_gated) for _ in blocks)
        self.parallel_adapters = nn.ModuleList(
            ParallelAdapter(dim, hidden_dim) for _ in (blocks if self.attention_blocks else []))

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        batch, channels, rows, cols = x.shape
        low = self.low_level.get(context, self.stage_index, (rows, cols))  # (B,H,W,C)
        grid = x.permute(0, 2, 3, 1)  # (B,H,W,C)
        if self.attention_blocks:
            for block, pre, parallel in zip(self.unit.blocks, self.generalized_adapters, self.parallel_adapters):
                tokens = pre(grid, low).reshape(batch, rows * cols, channels)
                tokens = block.conv_branch(tokens + block.attention_branch(tokens))
                side = parallel(block.mlp.norm(tokens).reshape(batch, rows, cols, channels), low)
                tokens = tokens + block.mlp(tokens) + self.parallel_scale * side.reshape(batch, rows * cols, channels)
                grid = tokens.reshape(batch, rows, cols, channels)
            x = grid.permute(0, 3, 1, 2)
        else:
            for block, pre in zip(self.unit.blocks, self.generalized_adapters):
                x = block(pre(x.permute(0, 2, 3, 1), low).permute(0, 3, 1, 2))
        return x if self.unit.downsample is None else self.unit.downsample(x)
