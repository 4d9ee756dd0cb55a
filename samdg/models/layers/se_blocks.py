"""Squeeze-and-excitation and the residual SE block (nnU-Net/UNETR residual block with channel attention).

The residual SE block is DeSAM's building block ("SRB"): conv3x3 -> InstanceNorm -> LeakyReLU -> conv3x3 ->
InstanceNorm -> squeeze-excitation -> + shortcut -> LeakyReLU. Convolutions carry no bias (the instance norm that
follows removes it anyway); the norms have no affine parameters. The shortcut is a 1x1 convolution + norm only
when the block changes the channel count or the resolution, else the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """Channel attention: (B,C,H,W) -> (B,C,H,W), each channel scaled by a gate in (0,1) computed from the
    globally pooled features (Linear C -> C/r -> C, no biases, ReLU then sigmoid)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden, bias=False)
        self.excite = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (B,C)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))
        return x * gate[:, :, None, None]


class ResidualSEBlock(nn.Module):
    """(B,in,H,W) -> (B,out,H/stride,W/stride): two 3x3 convolutions with instance norm, SE and a residual."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, se_reduction: int = 16,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.activation = nn.LeakyReLU(negative_slope)
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.InstanceNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.norm1(self.conv1(x)))
        out = self.se(self.norm2(self.conv2(out)))
        return self.activation(out + self.shortcut(x))
