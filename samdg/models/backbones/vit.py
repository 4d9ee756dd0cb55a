"""SAM's ViT image encoder (ViT-B/L/H) as a samdg backbone, on fused attention.

Built from segment-anything's own parts (PatchEmbed, Block, MLPBlock, LayerNorm2d, window partitioning) with the
parameter names of ImageEncoderViT, so official checkpoints load unchanged: ``patch_embed.proj``, ``pos_embed``
(1,g,g,C), ``blocks.i.{norm1,attn.{qkv,proj,rel_pos_h,rel_pos_w},norm2,mlp.{lin1,lin2}}``, ``neck.{0,1,2,3}``.
Only the attention differs: :class:`RelPosSdpaAttention`. Units are the blocks, channels-last (B,g,g,C);
taps ``stem`` (patch embedding + position embedding) and ``block0`` .. ``block{depth-1}`` are (B,C,g,g).
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Block, PatchEmbed, window_partition, window_unpartition
from torch import nn

from samdg.models.backbones.attention import RelPosSdpaAttention
from samdg.models.backbones.base import Backbone
from samdg.models.backbones.registry import VariantConfig, ViTSpec


def sam_neck(in_channels: int, out_channels: int) -> nn.Sequential:
    """SAM's neck: 1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d (no biases)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )


class ViTBlock(Block):
    """segment-anything's Block with fused attention and its two residual branches exposed for methods.

    ``forward(x) = x + attention_branch(x)``, then ``+ mlp_branch(.)``; x is (B,H,W,C).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: tuple[int, int]) -> None:
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=norm_layer,
            act_layer=nn.GELU,
            use_rel_pos=True,
            rel_pos_zero_init=True,
            window_size=window_size,
            input_size=grid,
        )
        attention_size = grid if window_size == 0 else (window_size, window_size)
        self.attn = RelPosSdpaAttention(
            dim, num_heads=num_heads, qkv_bias=True, use_rel_pos=True, rel_pos_zero_init=True, input_size=attention_size
        )

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """norm1 -> (window) attention; (B,H,W,C) -> (B,H,W,C), without the residual."""
        y = self.norm1(x)
        if self.window_size == 0:
            return self.attn(y)
        rows, cols = y.shape[1], y.shape[2]
        windows, padded = window_partition(y, self.window_size)
        return window_unpartition(self.attn(windows), self.window_size, padded, (rows, cols))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention_branch(x)
        return x + self.mlp_branch(x)


class ViTBackbone(Backbone):
    """(B,3,S,S) in [0,1] -> (B,256,S/16,S/16), with the weight layout of segment-anything's ImageEncoderViT."""

    unit_layout = "channels_last"

    def __init__(self, config: VariantConfig) -> None:
        super().__init__(config)
        spec: ViTSpec = config.encoder
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

    @property
    def units(self) -> nn.ModuleList:
        return self.blocks

    def unit_tap_name(self, index: int) -> str:
        return f"block{index}"

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        shape = (self.config.encoder.embed_dim, self.grid, self.grid)
        return {name: shape for name in self.tap_names}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images) + self.pos_embed

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(x.permute(0, 3, 1, 2))

    def transformer_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in self.named_modules() if isinstance(module, ViTBlock)]
