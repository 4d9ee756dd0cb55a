"""DB-SAM's trainable parts (paper architecture), and their installation in any backbone's hooks and slots.

Layouts follow the backbone protocol (:mod:`samdg.models.backbones.base`): hooks are channels-first (B,C,h,w),
block slots channels-last (B,H,W,C). The conv branch's running features travel in the backbone context under
``CONV_STREAM``:

- ``stem_hook`` (:class:`ConvBranch`): a light convolution stem on a low-resolution copy of the image (4E px for
  an E x E embedding: 256 px for ViT-B at 1024) -> shallow features at the first stage's output grid and width;
- ``stage_hooks[i]`` (:class:`DBSamStageHook`): channel attention (:class:`ChannelAttentionBlock`) on the stage
  output, the conv features carried to this stage's grid and width (:class:`ConvStreamCarry`), then the bilateral
  cross-attention (:class:`BilateralCrossAttention`); the updated ViT tokens go on into the next frozen stage;
- ``neck_hook`` (:class:`ViTConvFusion`): the gated fusion of the two branches, then the neck;
- with ``channel_attention="block"``: a channel attention block before every block of a stage but its first
  (``input_adapter``), so that with the stage's own one every block output is followed by one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.utils.checkpoint import checkpoint

from samdg.models.layers.deformable_attention import (
    MultiScaleDeformableAttention,
    heads_for_width,
    pixel_centre_reference_points,
)
from samdg.models.layers.se_blocks import SqueezeExcitation

CONV_STREAM = "dbsam_conv"  # context key of the conv branch's features (B,C,h,w) at the current stage


def resize_map(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,*grid): area average when shrinking, bilinear when growing, unchanged when equal."""
    if tuple(x.shape[-2:]) == tuple(grid):
        return x
    if x.shape[-2] >= grid[0] and x.shape[-1] >= grid[1]:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=grid, mode="bilinear", align_corners=False)


class ChannelAttentionBlock(nn.Module):
    """DB-SAM's CAB, (B,C,H,W) -> (B,C,H,W): ``x + PW1x1(SE(DWConv3x3(LN(x))))``.

    The pointwise convolution starts at zero, so the block starts as the identity and the frozen encoder first sees
    its own features.
    """

    def __init__(self, channels: int, se_reduction: int = 4) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.se = SqueezeExcitation(channels, se_reduction)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.pointwise.weight)
        nn.init.zeros_(self.pointwise.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(self.se(self.depthwise(self.norm(x))))


class ChannelAttentionAdapter(nn.Module):
    """A :class:`ChannelAttentionBlock` in a block's ``input_adapter`` slot: (B,H,W,C) -> (B,H,W,C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cab = ChannelAttentionBlock(channels)

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        return self.cab(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _conv_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    # LayerNorm instead of the released (Sync)BatchNorm: DB-SAM trains with batch 1.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                         LayerNorm2d(out_channels), nn.GELU())


class ConvBranch(nn.Module):
    """The conv branch, as the ``stem_hook``: it leaves the stem output unchanged and puts the shallow features
    (B, ``out_channels``, *``grid``) in ``context[CONV_STREAM]``.

    The normalised image (``context["images"]``, (B,3,S,S)) is resized to ``low_resolution`` px, then stride-2
    3x3 convolutions (``channels``, doubling) run until the map reaches ``grid`` (the first stage's output grid;
    resized exactly to it at the end), then a 1x1 projection to ``out_channels`` and a LayerNorm.
    """

    def __init__(self, low_resolution: int, grid: tuple[int, int], out_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.low_resolution, self.grid = low_resolution, tuple(grid)
        depth = max(1, round(math.log2(low_resolution / max(grid))))
        widths = [3] + [channels * 2**i for i in range(depth)]
        self.convs = nn.Sequential(*(_conv_layer(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.project = nn.Sequential(nn.Conv2d(widths[-1], out_channels, 1), LayerNorm2d(out_channels))

    def shallow_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,S,S) -> (B, out_channels, *grid)."""
        size = (self.low_resolution, self.low_resolution)
        low = images if tuple(images.shape[-2:]) == size else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.project(resize_map(self.convs(low), self.grid))

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        context[CONV_STREAM] = self.shallow_features(context["images"])
        return x


class ConvStreamCarry(nn.Module):
    """Conv features from one stage's output (C_in, grid_in) to the next one's (C_out, grid): resize + 1x1 conv.
    Only built where the width or the grid changes (TinyViT); ViT stages share theirs."""

    def __init__(self, in_channels: int, out_channels: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.project = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(resize_map(x, self.grid))


class DeformableCrossAttentionLayer(nn.Module):
    """One direction of the bilateral block: queries (B,C,H,W) attend deformably to a source map (B,C,h,w).

    ``q = q + scale_attn * attn(LN(q), LN(source))``, then ``q = q + scale_ffn * FFN(LN(q))``; reference points
    at the queries' pixel centres. ``scale_*`` are per-channel layer scales that start at zero (as ViT-Adapter's
    injector), so the frozen encoder first sees its own features.
    """

    def __init__(self, dim: int, heads: int, points: int, ffn_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * ffn_ratio))
        self.query_norm, self.source_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = MultiScaleDeformableAttention(dim, heads, levels=1, points=points)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.scale_attn = nn.Parameter(torch.zeros(dim))
        self.scale_ffn = nn.Parameter(torch.zeros(dim))

    def forward(self, query: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        batch, dim, rows, cols = query.shape
        tokens = query.flatten(2).transpose(1, 2)  # (B,HW,C)
        reference = pixel_centre_reference_points((rows, cols), query.device, query.dtype)[None]
        source = self.source_norm(source.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        tokens = tokens + self.scale_attn * self.attention(self.query_norm(tokens), reference, [source])
        tokens = tokens + self.scale_ffn * self.ffn(self.ffn_norm(tokens))
        return tokens.transpose(1, 2).reshape(batch, dim, rows, cols)


class BilateralCrossAttention(nn.Module):
    """BCA: ViT tokens query the conv features and conv tokens query the ViT features, both from the block's
    inputs. (B,C,H,W), (B,C,H,W) -> updated (vit, conv)."""

    def __init__(self, dim: int, heads: int, points: int, ffn_ratio: float) -> None:
        super().__init__()
        self.vit_from_conv = DeformableCrossAttentionLayer(dim, heads, points, ffn_ratio)
        self.conv_from_vit = DeformableCrossAttentionLayer(dim, heads, points, ffn_ratio)

    def forward(self, vit: torch.Tensor, conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vit_from_conv(vit, conv), self.conv_from_vit(conv, vit)


class DBSamStageHook(nn.Module):
    """``stage_hooks[i]``: channel attention, then the bilateral cross-attention with the conv features of the
    context (carried to this stage first when ``carry`` is set); writes the updated conv features back.

    ``checkpointing``: recompute the cross-attention in the backward pass (saves its activations' memory).
    """

    def __init__(self, channels: int, carry: ConvStreamCarry | None, heads: int, points: int, ffn_ratio: float,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.channel_attention = ChannelAttentionBlock(channels)
        self.carry = carry
        self.cross_attention = BilateralCrossAttention(channels, heads, points, ffn_ratio)
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        x = self.channel_attention(x)
        conv = context[CONV_STREAM]
        if self.carry is not None:
            conv = self.carry(conv)
        if self.checkpointing and torch.is_grad_enabled():
            x, conv = checkpoint(self.cross_attention, x, conv, use_reentrant=False)
        else:
            x, conv = self.cross_attention(x, conv)
        context[CONV_STREAM] = conv
        return x


class ViTConvFusion(nn.Module):
    """``neck_hook``: ``M = sigmoid(FC-GELU-FC(F_d) + FC-GELU-FC(F_s))``, ``F = M * F_d + (1 - M) * F_s`` per
    position and channel; F_d the last stage output (B,C,H,W), F_s the conv features of the context (same shape).

    The gates' last layers start at zero with a bias that gives M = sigmoid(4) ~ 0.98: the neck first sees (almost)
    the ViT features it was trained on.
    """

    INITIAL_GATE_LOGIT = 4.0

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.vit_gate = self._gate(channels)
        self.conv_gate = self._gate(channels)
        with torch.no_grad():
            self.vit_gate[-1].bias.fill_(self.INITIAL_GATE_LOGIT)

    @staticmethod
    def _gate(channels: int) -> nn.Sequential:
        gate = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels))
        nn.init.zeros_(gate[-1].weight)
        nn.init.zeros_(gate[-1].bias)
        return gate

    def forward(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        vit, conv = x.permute(0, 2, 3, 1), context[CONV_STREAM].permute(0, 2, 3, 1)
        mix = torch.sigmoid(self.vit_gate(vit) + self.conv_gate(conv))
        return (mix * vit + (1 - mix) * conv).permute(0, 3, 1, 2)


def install_dbsam(encoder: nn.Module, conv_channels: int, head_dim: int, points: int, ffn_ratio: float,
                  channel_attention: str = "stage", checkpointing: bool = False) -> None:
    """Fill ``encoder``'s hooks (and, with ``channel_attention="block"``, its blocks' input adapters) with DB-SAM's
    parts, sized from its stages. Works on any backbone of the protocol; what was installed is
    ``encoder.extensions()``."""
    stages = encoder.stages()
    low_resolution = 4 * encoder.config.embedding_size
    encoder.stem_hook = ConvBranch(low_resolution, stages[0].out_grid, stages[0].out_channels, conv_channels)
    previous = (stages[0].out_channels, tuple(stages[0].out_grid))
    for stage in stages:
        shape = (stage.out_channels, tuple(stage.out_grid))
        carry = None if shape == previous else ConvStreamCarry(previous[0], stage.out_channels, stage.out_grid)
        encoder.stage_hooks[stage.index] = DBSamStageHook(stage.out_channels, carry,
                                                          heads_for_width(stage.out_channels, head_dim), points,
                                                          ffn_ratio, checkpointing)
        previous = shape
        if channel_attention == "block":
            for block in stage.blocks[1:]:
                block.input_adapter = ChannelAttentionAdapter(stage.channels)
    encoder.neck_hook = ViTConvFusion(stages[-1].out_channels)
