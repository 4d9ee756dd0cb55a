"""SAM's ViT image encoder (ViT-B/L/H) as the backbone family ``vit``, on fused attention.

Built from segment-anything's parts (PatchEmbed, MLPBlock, LayerNorm2d, window partitioning) with the parameter
names of ImageEncoderViT, so official checkpoints load unchanged: ``patch_embed.proj``, ``pos_embed`` (1,g,g,C),
``blocks.i.{norm1,attn.{qkv,proj,rel_pos_h,rel_pos_w},norm2,mlp.{lin1,lin2}}``, ``neck.{0,1,2,3}``. Only the
attention differs: :class:`RelPosSdpaAttention`. Stages: the blocks up to and including each global-attention
block (ViT-B: 0-2, 3-5, 6-8, 9-11), all at the (g,g) grid of width C, g = S/16. Taps ``stem`` (patch embedding +
position embedding) and ``block0`` .. ``block{depth-1}``, all (B,C,g,g).
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling.common import LayerNorm2d, MLPBlock
from segment_anything.modeling.image_encoder import PatchEmbed, window_partition, window_unpartition
from torch import nn

from samdg.models.backbones.attention import RelPosSdpaAttention
from samdg.models.backbones.base import Backbone, Stage
from samdg.models.backbones.blocks import TransformerBlock
from samdg.models.backbones.registry import VariantConfig, ViTSpec, register_family


def sam_neck(in_channels: int, out_channels: int) -> nn.Sequential:
    """SAM's neck: 1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d (no biases). (B,C,h,w) -> (B,256,h,w)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )


class ViTBlock(TransformerBlock):
    """segment-anything's ViT block (same parameters) on the block protocol: (B,H,W,C) -> (B,H,W,C).

    ``mix_tokens(x) = x + attn(norm1(x))`` (windowed unless ``window_size`` is 0); ``mlp_norm = norm2``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: tuple[int, int]) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        attention_size = grid if window_size == 0 else (window_size, window_size)
        self.norm1 = norm_layer(dim)
        self.attn = RelPosSdpaAttention(
            dim, num_heads=num_heads, qkv_bias=True, use_rel_pos=True, rel_pos_zero_init=True, input_size=attention_size
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size

    def attention_branch(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size == 0:
            return self.attn(y, context)
        rows, cols = y.shape[1], y.shape[2]
        windows, padded = window_partition(y, self.window_size)
        return window_unpartition(self.attn(windows, context), self.window_size, padded, (rows, cols))

    def mlp_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x)


def stage_ends(spec: ViTSpec) -> list[int]:
    """Index of the last block of each stage: every global-attention block, and the last block."""
    ends = sorted(set(spec.global_attn_indexes) | {spec.depth - 1})
    return [end for end in ends if 0 <= end < spec.depth]


@register_family("vit")
class ViTBackbone(Backbone):
    """(B,3,S,S) in [0,1] -> (B,256,S/16,S/16), with the weight layout of segment-anything's ImageEncoderViT."""

    def __init__(self, config: VariantConfig) -> None:
        spec: ViTSpec = config.encoder
        super().__init__(config, num_stages=len(stage_ends(spec)))
        grid = config.input_size // spec.patch_size
        self.grid = grid
        self.patch_embed = PatchEmbed(
            kernel_size=(spec.patch_size, spec.patch_size),
            stride=(spec.patch_size, spec.patch_size),
            in_chans=3,
            embed_dim=spec.embed_dim,
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, spec.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                spec.embed_dim,
                spec.num_heads,
                spec.mlp_ratio,
                window_size=0 if index in spec.global_attn_indexes else spec.window_size,
                grid=(grid, grid),
            )
            for index in range(spec.depth)
        )
        self.neck = sam_neck(spec.embed_dim, config.embedding_dim)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return (self.patch_embed(images) + self.pos_embed).permute(0, 3, 1, 2)

    def stages(self) -> list[Stage]:
        dim, grid = self.config.encoder.embed_dim, (self.grid, self.grid)
        stages, start = [], 0
        for index, end in enumerate(stage_ends(self.config.encoder)):
            members = range(start, end + 1)
            stages.append(Stage(index, tuple(self.blocks[i] for i in members), dim, grid, dim, grid,
                                block_taps=tuple(f"block{i}" for i in members)))
            start = end + 1
        return stages
