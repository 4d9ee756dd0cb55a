"""Low-rank adaptation (LoRA) of the encoder's attention projections, SAMed-style.

``W x`` becomes ``W x + (alpha / r) * B A x`` with A (r x in) Kaiming-initialised and B (out x r) zero, so a
freshly wrapped encoder computes exactly what the frozen one did. SAMed adapts the q and v parts of ViT's fused
``qkv`` projection; samdg adapts the whole fused ``qkv`` matrix, because TinyViT interleaves q, k and v per head
inside it, and one rule then serves both encoder families (a deviation from SAMed, stated here on purpose).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update. Input (..., in) -> output (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError("LoRA rank must be >= 1")
        self.base = base
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # read by code that inspects the projection (e.g. its dtype)
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_a.to(x.dtype).t()) @ self.lora_b.to(x.dtype).t()
        return self.base(x) + self.scale * update


def add_lora(module: nn.Module, rank: int, alpha: float | None = None, target: str = "qkv") -> int:
    """Replace every ``nn.Linear`` named ``target`` below ``module`` by a :class:`LoRALinear`; return the count."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name == target and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                replaced += 1
    return replaced


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA factors below ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]
