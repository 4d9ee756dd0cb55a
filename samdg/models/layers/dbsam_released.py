"""DB-SAM's released configuration (``architecture: released``): ``FourBranchImagePyramidAdapter``.

The released repository (config ``db_sam_plus_model_params.yaml``) differs from the paper; samdg rebuilds it on the
backbone protocol (hooks channels-first (B,C,h,w); the conv maps travel in the context under ``CONV_PYRAMID``):

- ``stem_hook`` (:class:`ImagePyramidBranch`): the image resized to 8E, 4E, 2E and E px (512, 256, 128, 64 for
  ViT-B at 1024); each level a stack of three Conv3x3-BatchNorm-ReLU layers (128, 256, 512 channels; stride 2 while
  the map is larger than the first stage's grid, else 1), a 1x1 convolution to the stage width and a LayerNorm,
  plus a learned per-level embedding (zero init) -> four maps at the first stage's output grid;
- ``stage_hooks[i]`` (:class:`PyramidStageHook`): the 5-map pyramid [ViT, c1..c4] through two multi-scale
  deformable blocks in which every map attends to all five (:class:`MultiSourceDeformableBlock`); the updated
  ViT map enters the next frozen stage, the conv maps are carried on;
- ``neck_hook`` (:class:`SoftmaxSourceFusion`, ``MultiConvFeatsDANE``): a bottleneck gate per source, softmax
  over the sources per position and channel, the weighted sum + a residual FFN, then a LayerNorm; the neck trains.

Assumed, because the released repository lacks the source (``deformable_encoder.py``'s ``MSMixFFN``,
``interaction_block.py``): the FFN is ViT-Adapter's ConvFFN (Linear C -> 4C, depthwise 3x3 convolution per map,
GELU, Linear 4C -> C); blocks are pre-norm (LayerNorm on queries and values, attention + residual, LayerNorm + FFN +
residual) with drop-path 0.3 on both residuals and dropout 0.1 on the attention output; the deformable attention
is pure PyTorch (:mod:`samdg.models.layers.deformable_attention`). Stages of another width or grid (TinyViT, not
in the release) get the conv maps area-averaged and projected by a 1x1 convolution. The released fusion builds a
sixth gate that no map uses; samdg builds five.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.utils.checkpoint import checkpoint

from samdg.models.layers.dbsam_blocks import ConvStreamCarry, resize_map
from samdg.models.layers.deformable_attention import (
    MultiScaleDeformableAttention,
    heads_for_width,
    pixel_centre_reference_points,
)

CONV_PYRAMID = "dbsam_pyramid"  # context key: list of 4 conv maps (B,C,h,w) at the current stage
PYRAMID_WIDTHS = (128, 256, 512)
FFN_RATIO, DROP_PATH, ATTENTION_DROPOUT, GATE_WIDTH = 4, 0.3, 0.1, 64


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``p`` (rescaled by 1/(1-p))."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


class PyramidLevel(nn.Module):
    """One level of the image pyramid: normalised images (B,3,S,S) resized to ``size`` px -> (B, C, *grid)."""

    def __init__(self, size: int, grid: tuple[int, int], out_channels: int) -> None:
        super().__init__()
        self.size, self.grid = size, tuple(grid)
        downsamplings = max(0, min(len(PYRAMID_WIDTHS), round(math.log2(size / max(grid)))))
        layers, previous = [], 3
        for i, width in enumerate(PYRAMID_WIDTHS):
            layers += [nn.Conv2d(previous, width, 3, stride=2 if i < downsamplings else 1, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Conv2d(previous, out_channels, 1), LayerNorm2d(out_channels))
        self.level_embedding = nn.Parameter(torch.zeros(out_channels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                                  align_corners=False, antialias=self.size < images.shape[-1])
        return self.project(resize_map(self.convs(resized), self.grid)) + self.level_embedding[:, None, None]


class ImagePyramidBranch(nn.Module):
    """``stem_hook``: four conv maps (B, C, *grid) of the image at 8E, 4E, 2E and E px into the context."""

    def __init__(self, embedding_size: int, grid: tuple[int, int], out_channels: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(PyramidLevel(embedding_size * 2**k, grid, out_channels) for k in (3, 2, 1, 0))

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        context[CONV_PYRAMID] = [level(context["images"]) for level in self.levels]
        return x


class ConvFFN(nn.Module):
    """ViT-Adapter's ConvFFN on several maps' tokens: (B, sum_l H_l W_l, C) -> same shape."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()

    def forward(self, tokens: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        hidden = self.fc1(tokens)
        mixed, start = [], 0
        for rows, cols in shapes:
            part = hidden[:, start:start + rows * cols].transpose(1, 2).reshape(hidden.shape[0], -1, rows, cols)
            mixed.append(self.depthwise(part).flatten(2).transpose(1, 2))
            start += rows * cols
        return self.fc2(self.act(torch.cat(mixed, dim=1)))


class MultiSourceDeformableBlock(nn.Module):
    """Every token of every map queries all maps: maps (B,C,H_l,W_l) x L -> updated maps, same shapes."""

    def __init__(self, dim: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.query_norm, self.value_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = MultiScaleDeformableAttention(dim, heads, levels=levels, points=points)
        self.attention_dropout = nn.Dropout(ATTENTION_DROPOUT)
        self.ffn = ConvFFN(dim, FFN_RATIO * dim)
        self.drop_path = DropPath(DROP_PATH)

    def forward(self, *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shapes = [tuple(m.shape[-2:]) for m in maps]
        tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)  # (B, sum HW, C)
        reference = torch.cat([pixel_centre_reference_points(s, tokens.device, tokens.dtype) for s in shapes])[None]
        values = [self.value_norm(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for m in maps]
        attended = self.attention(self.query_norm(tokens), reference, values)
        tokens = tokens + self.drop_path(self.attention_dropout(attended))
        tokens = tokens + self.drop_path(self.ffn(self.ffn_norm(tokens), shapes))
        out, start = [], 0
        for m, (rows, cols) in zip(maps, shapes):
            out.append(tokens[:, start:start + rows * cols].transpose(1, 2).reshape(m.shape))
            start += rows * cols
        return tuple(out)


class PyramidStageHook(nn.Module):
    """``stage_hooks[i]``: the ViT map and the four conv maps (carried to this stage first when ``carries`` is set)
    through ``depth`` multi-source deformable blocks; the conv maps are written back to the context."""

    def __init__(self, channels: int, carries: nn.ModuleList | None, heads: int, points: int, depth: int = 2,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.carries = carries
        self.blocks = nn.ModuleList(MultiSourceDeformableBlock(channels, 5, heads, points) for _ in range(depth))
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        maps = context[CONV_PYRAMID]
        if self.carries is not None:
            maps = [carry(m) for carry, m in zip(self.carries, maps)]
        maps = (x, *maps)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                maps = checkpoint(block, *maps, use_reentrant=False)
            else:
                maps = block(*maps)
        context[CONV_PYRAMID] = list(maps[1:])
        return maps[0]


class SoftmaxSourceFusion(nn.Module):
    """``neck_hook`` (``MultiConvFeatsDANE``): ViT map x (B,C,H,W) and the four conv maps of the context ->
    ``LN(F + drop_path(FFN(LN(F))))`` with ``F = sum_s softmax_s(gate_s(map_s)) * map_s`` per position and channel;
    gate: Linear C -> 64, SiLU, LayerNorm, Linear 64 -> C."""

    def __init__(self, channels: int, sources: int = 5) -> None:
        super().__init__()
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, GATE_WIDTH), nn.SiLU(), nn.LayerNorm(GATE_WIDTH),
                          nn.Linear(GATE_WIDTH, channels)) for _ in range(sources))
        self.ffn_norm, self.out_norm = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, FFN_RATIO * channels), nn.GELU(),
                                 nn.Linear(FFN_RATIO * channels, channels))
        self.drop_path = DropPath(DROP_PATH)

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        maps = torch.stack([m.permute(0, 2, 3, 1) for m in (x, *context[CONV_PYRAMID])])  # (5,B,H,W,C)
        weights = torch.stack([gate(m) for gate, m in zip(self.gates, maps)]).softmax(dim=0)
        fused = (weights * maps).sum(dim=0)
        fused = fused + self.drop_path(self.ffn(self.ffn_norm(fused)))
        return self.out_norm(fused).permute(0, 3, 1, 2)


def install_dbsam_released(encoder: nn.Module, head_dim: int, points: int, checkpointing: bool = False) -> None:
    """Fill ``encoder``'s hooks with the released configuration's parts, sized from its stages."""
    stages = encoder.stages()
    first = stages[0]
    encoder.stem_hook = ImagePyramidBranch(encoder.config.embedding_size, first.out_grid, first.out_channels)
    previous = (first.out_channels, tuple(first.out_grid))
    for stage in stages:
        shape = (stage.out_channels, tuple(stage.out_grid))
        carries = None if shape == previous else nn.ModuleList(
            ConvStreamCarry(previous[0], stage.out_channels, stage.out_grid) for _ in range(4))
        encoder.stage_hooks[stage.index] = PyramidStageHook(
            stage.out_channels, carries, heads_for_width(stage.out_channels, head_dim), points,
            checkpointing=checkpointing)
        previous = shape
    encoder.neck_hook = SoftmaxSourceFusion(stages[-1].out_channels)
