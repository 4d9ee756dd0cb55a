"""DAPSAM's prompt generator: a domain-adaptive prototype read from a learnable memory bank -> dense prompt.

From the image embedding E (B,C,H,W):

1. prototype ``p = GAP(E) + GMP(E)`` (B,C);
2. memory read ``w = softmax(p M^T)`` over the slots of ``M`` (slots x C), ``p~ = w M`` (B,C): the
   domain-adaptive prototype (a convex combination of slots learnt on the source domain);
3. activation map ``a = cos(p~, E)`` per pixel (B,1,H,W);
4. dense prompt ``Conv1x1(concat[E, p~ broadcast, a])`` (B,C,H,W), which takes the place of SAM's "no mask"
   dense embedding. No points or boxes: the sparse prompt is empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MemoryBank(nn.Module):
    """``slots`` learnable C-vectors read by softmax attention: (B,C) queries -> (B,C).

    Addressing is the plain dot product of the released code (the paper's figure draws a cosine similarity).
    Initialised uniformly in +-1/sqrt(C).
    """

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.memory = nn.Parameter(torch.empty(slots, dim).uniform_(-bound, bound))

    def addressing(self, query: torch.Tensor) -> torch.Tensor:
        """(B,C) -> (B,slots) read weights, summing to 1 per row."""
        return torch.softmax(query @ self.memory.t(), dim=-1)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.addressing(query) @ self.memory


class PrototypePromptGenerator(nn.Module):
    """(B,C,H,W) image embedding -> (B,C,H,W) dense prompt (steps in the module docstring).

    Args:
        dim: embedding channels C (256 for every SAM variant).
        memory_slots: rows of the memory bank (DAPSAM: 256).
    """

    def __init__(self, dim: int = 256, memory_slots: int = 256) -> None:
        super().__init__()
        self.memory_bank = MemoryBank(memory_slots, dim)
        self.fuse = nn.Conv2d(2 * dim + 1, dim, kernel_size=1)

    @staticmethod
    def prototype(embedding: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B,C): global average + global max pooling."""
        return embedding.mean(dim=(2, 3)) + embedding.amax(dim=(2, 3))

    def adaptive_prototype(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B,C): the prototype re-expressed by the memory bank."""
        return self.memory_bank(self.prototype(embedding))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        adaptive = self.adaptive_prototype(embedding)[:, :, None, None].expand_as(embedding)
        activation = F.cosine_similarity(adaptive, embedding, dim=1, eps=1e-7).unsqueeze(1)  # (B,1,H,W)
        return self.fuse(torch.cat([embedding, adaptive, activation], dim=1))
