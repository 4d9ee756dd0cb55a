"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021) in pure PyTorch.

Each query looks at a few points per head and per level of a feature pyramid, around its reference point: the
sampling offsets and the attention weights (a softmax over all levels x points of a head) are linear functions of
the query. The values are read with bilinear interpolation (``torch.nn.functional.grid_sample``) instead of the
compiled CUDA kernel of the reference implementation, so the layer runs on CPUs, in CI and on any GPU; its result
is the same sum (tested against the bilinear sampling written out).

Coordinates: a location (x, y) is normalised to [0, 1] over a level's width and height, pixel centres at
((j + 0.5) / W, (i + 0.5) / H) (:func:`pixel_centre_reference_points`); offsets are predicted in pixels of each
level, so ``location = reference + offset / (W_l, H_l)``. Samples outside a map read zeros. Under mixed precision
the locations, weights and sampling run in float32 (a bf16 location is off by up to half a pixel on a 128 grid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pixel_centre_reference_points(grid: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """The centres of an (H, W) grid in row-major order, normalised: (H*W, 2) as (x, y) in (0, 1)."""
    rows, cols = grid
    y = (torch.arange(rows, device=device, dtype=dtype) + 0.5) / rows
    x = (torch.arange(cols, device=device, dtype=dtype) + 0.5) / cols
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> float32; float32 and float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def deformable_sampling(values: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted sum of bilinear samples: the core of the attention.

    Args:
        values: one map per level, (N, D, H_l, W_l) (N = batch x heads, D = head width).
        locations: (N, Q, L, P, 2) sampling locations (x, y) in [0, 1] (outside reads zeros).
        weights: (N, Q, L, P) attention weights.
    Returns:
        (N, Q, D): ``sum_{l,p} weights[n,q,l,p] * bilinear(values[l][n], locations[n,q,l,p])``.
    """
    out = 0
    for level, value in enumerate(values):
        grid = 2 * locations[:, :, level] - 1  # grid_sample's [-1, 1] frame, align_corners=False: pixel centres
        sampled = F.grid_sample(value.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N,D,Q,P)
        out = out + (sampled * weights[:, None, :, level]).sum(dim=-1)
    return out.transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Queries (B, Q, C) attend to ``levels`` value maps (B, C, H_l, W_l) at ``points`` points per head and level.

    ``forward(query, reference, values) -> (B, Q, C)``; ``reference`` (B or 1, Q, 2) normalised (x, y). The same
    reference serves every level (the coordinates are normalised). Initialised as Deformable DETR: offsets start
    as a fixed star of directions per head (1..P pixels out), the attention uniform, projections Xavier.
    """

    def __init__(self, dim: int, heads: int, levels: int = 1, points: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        star = torch.stack([angles.cos(), angles.sin()], -1)
        star = star / star.abs().max(dim=-1, keepdim=True).values  # (heads, 2) on the unit square's border
        star = star[:, None, None, :].repeat(1, self.levels, self.points, 1)
        star = star * torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(star.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def head_values(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """(B, C, H, W) per level -> projected, split by head: (B*heads, C/heads, H, W) per level."""
        if len(values) != self.levels:
            raise ValueError(f"expected {self.levels} value maps, got {len(values)}")
        out = []
        for value in values:
            batch, _, rows, cols = value.shape
            projected = self.value_proj(value.permute(0, 2, 3, 1))  # (B,H,W,C)
            projected = projected.reshape(batch, rows, cols, self.heads, self.dim // self.heads)
            out.append(projected.permute(0, 3, 4, 1, 2).reshape(batch * self.heads, -1, rows, cols))
        return out

    def sampling(self, query: torch.Tensor, reference: torch.Tensor,
                 shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Where and how much each query looks: locations (B*heads, Q, L, P, 2) and weights (B*heads, Q, L, P)."""
        batch, queries, _ = query.shape
        heads, levels, points = self.heads, self.levels, self.points
        offsets = at_least_float32(self.sampling_offsets(query)).view(batch, queries, heads, levels, points, 2)
        sizes = torch.tensor([[cols, rows] for rows, cols in shapes], device=query.device, dtype=offsets.dtype)
        reference = reference.to(offsets.dtype)[:, :, None, None, None, :]
        locations = reference + offsets / sizes[None, None, None, :, None, :]
        weights = at_least_float32(self.attention_weights(query)).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1)
        weights = weights.view(batch, queries, heads, levels, points)
        locations = locations.permute(0, 2, 1, 3, 4, 5).reshape(batch * heads, queries, levels, points, 2)
        weights = weights.permute(0, 2, 1, 3, 4).reshape(batch * heads, queries, levels, points)
        return locations, weights

    def merge_heads(self, sampled: torch.Tensor, batch: int) -> torch.Tensor:
        """(B*heads, Q, C/heads) -> output projection of (B, Q, C)."""
        _, queries, width = sampled.shape
        merged = sampled.view(batch, self.heads, queries, width).transpose(1, 2).reshape(batch, queries, self.dim)
        return self.output_proj(merged)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
        shapes = [tuple(value.shape[-2:]) for value in values]
        reference = reference.expand(query.shape[0], -1, -1)
        locations, weights = self.sampling(query, reference, shapes)
        sampled = deformable_sampling(self.head_values(values), locations, weights)
        return self.merge_heads(sampled.to(query.dtype), query.shape[0])


def heads_for_width(width: int, head_dim: int) -> int:
    """About ``width / head_dim`` heads, rounded down to a divisor of ``width`` (at least 1): 768/64 -> 12,
    160/64 -> 2, 24/64 -> 1."""
    heads = max(1, round(width / head_dim))
    while width % heads:
        heads -= 1
    return heads
