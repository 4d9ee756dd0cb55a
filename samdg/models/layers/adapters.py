"""Bottleneck adapters for frozen blocks, and DAPSAM's parameter-free channel filter.

All tensors here are channels-last, (B,H,W,C), the layout of the block protocol's slots
(:mod:`samdg.models.backbones.blocks`). Three pieces:

- :class:`ChannelAttentionFilter` scales each channel by ``sigmoid(max_hw(x) + mean_hw(x))``. It has no
  parameters. ``width_gated=True`` reproduces the axis bug of DAPSAM's released pre-block filter, where the gate
  was computed per image column (pooling over rows and channels) instead of per channel.
- :class:`GeneralizedAdapter` ("generalisation-friendly adapter", a block's ``input_adapter``): fuses the block
  input with the low-level features, filters the fusion and adds a bottleneck MLP of it to the block input.
- :class:`ParallelAdapter` (a transformer block's ``parallel_mlp``): the block computes
  ``x + mlp(xn) + scale * MLP(filter(xn + low))`` with ``xn`` the normalised input of its MLP.

Both adapters read the low-level features from the context (:func:`samdg.models.layers.low_level_features.
low_level`, set by the ``stem_hook``); ``source`` says which of its projections fits the block.
"""

from __future__ import annotations

import torch
from torch import nn

from samdg.models.layers.low_level_features import low_level


class ChannelAttentionFilter(nn.Module):
    """(B,H,W,C) -> (B,H,W,C): ``x * sigmoid(GMP(x) + GAP(x))``, a gate per channel (or per column, see below).

    Args:
        width_gated: reproduce the released code's bug: the gate is pooled over rows and channels and so varies
            along the image width (one gate per column) instead of per channel. Off by default.
    """

    def __init__(self, width_gated: bool = False) -> None:
        super().__init__()
        self.width_gated = width_gated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled_dims = (1, 3) if self.width_gated else (1, 2)  # (rows, channels) or (rows, columns)
        gate = torch.sigmoid(x.amax(dim=pooled_dims, keepdim=True) + x.mean(dim=pooled_dims, keepdim=True))
        return x * gate

    def extra_repr(self) -> str:
        return f"width_gated={self.width_gated}"


class BottleneckMLP(nn.Module):
    """(..., C) -> (..., C): Linear C -> hidden, GELU, Linear hidden -> C.

    ``trunc_normal_init`` gives weights N(0, 0.02) truncated at +-2 and zero biases (DAPSAM's pre-block adapters);
    otherwise PyTorch's default Linear initialisation (its in-block adapters).
    """

    def __init__(self, dim: int, hidden_dim: int, trunc_normal_init: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        if trunc_normal_init:
            for layer in (self.fc1, self.fc2):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GeneralizedAdapter(nn.Module):
    """DAPSAM's pre-block adapter: ``x + MLP(filter(input_scale * x + low))``.

    Args:
        dim: channels C of the block input.
        hidden_dim: bottleneck width (DAPSAM: C / 4).
        source: index of the low-level projection at this block's width and grid.
        input_scale: weight of the block input in the fusion (DAPSAM: 0.5).
        width_gated: see :class:`ChannelAttentionFilter`.
    Shapes: ``forward(x (B,H,W,C), context)`` -> (B,H,W,C); low (B,H,W,C) comes from the context.
    """

    def __init__(self, dim: int, hidden_dim: int, source: int = 0, input_scale: float = 0.5,
                 width_gated: bool = False) -> None:
        super().__init__()
        self.source = source
        self.input_scale = input_scale
        self.filter = ChannelAttentionFilter(width_gated=width_gated)
        self.mlp = BottleneckMLP(dim, hidden_dim, trunc_normal_init=True)

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        return x + self.mlp(self.filter(self.input_scale * x + low_level(context, self.source)))


class ParallelAdapter(nn.Module):
    """DAPSAM's in-block adapter: ``scale * MLP(filter(xn + low))``, without a skip (the block adds it).

    Shapes: ``forward(xn (B,H,W,C), context)`` (xn: the normalised input of the block's MLP) -> (B,H,W,C).
    """

    def __init__(self, dim: int, hidden_dim: int, source: int = 0, scale: float = 0.5) -> None:
        super().__init__()
        self.source = source
        self.scale = scale
        self.filter = ChannelAttentionFilter(width_gated=False)
        self.mlp = BottleneckMLP(dim, hidden_dim)

    def forward(self, xn: torch.Tensor, context: dict) -> torch.Tensor:
        return self.scale * self.mlp(self.filter(xn + low_level(context, self.source)))
