"""The block protocol: the two kinds of encoder block and their extension slots, the same in every family.

Every block is called as ``block(x, context)`` with x channels-last, (B,H,W,C), and returns (B,H,W,C) of the same
shape; ``context`` is the backbone context (a dict, see :mod:`samdg.models.backbones.base`). The slots are module
attributes, ``None`` until a method fills them, so whatever a method puts there has a stable state_dict name
(``<block>.input_adapter.*``, ``<block>.parallel_mlp.*``, ``<block>.attn.kv_prompt.*``).

- :class:`ConvBlock` (e.g. TinyViT's MBConv): ``x = input_adapter(x, context)`` (if set), then the family's
  convolution body.
- :class:`TransformerBlock` (ViT blocks, TinyViT blocks)::

      x  = input_adapter(x, context)                       if set; the adapter includes its own residual
      x  = mix_tokens(x, context)                          ViT: x + attention_branch(x, context)
                                                           TinyViT: local_conv(x + attention_branch(x, context))
      xn = mlp_norm(x)                                     the MLP's normalised input (ViT: norm2; TinyViT: mlp.norm)
      x  = x + mlp(xn) + parallel_mlp(xn, context)         parallel_mlp (an expert MLP, an adapter) if set

  ``attention_branch(x, context)`` is the attention without its residual, (B,H,W,C) -> (B,H,W,C); it calls
  ``attn(windows, context)``, whose ``kv_prompt`` slot receives the context (per-sample tokens, e.g. chosen by
  ``context["modality"]``). ``mlp`` is the MLP body on the normalised input, (B,H,W,C) -> (B,H,W,C).

Slot signatures: ``input_adapter(x (B,H,W,C), context) -> (B,H,W,C)``; ``parallel_mlp(xn (B,H,W,C), context)
-> (B,H,W,C)``, added to the block's MLP output.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class Block(nn.Module):
    """Base of every encoder block: ``forward(x (B,H,W,C), context) -> (B,H,W,C)`` with an ``input_adapter`` slot."""

    def __init__(self) -> None:
        super().__init__()
        self.register_module("input_adapter", None)

    def forward(self, x: torch.Tensor, context: Optional[dict] = None) -> torch.Tensor:
        context = {} if context is None else context
        if self.input_adapter is not None:
            x = self.input_adapter(x, context)
        return self.body(x, context)

    def body(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        """The family's computation after the input adapter: (B,H,W,C) -> (B,H,W,C)."""
        raise NotImplementedError


class ConvBlock(Block):
    """A convolutional block. Subclasses implement ``conv(x (B,C,H,W)) -> (B,C,H,W)``; the block keeps the
    channels-last interface by permuting around it."""

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def body(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class TransformerBlock(Block):
    """An attention block with the ``parallel_mlp`` slot beside its MLP (and ``attn.kv_prompt``).

    Subclasses provide ``attn`` (a promptable attention), ``mlp`` (the MLP body on normalised input),
    ``attention_branch(x, context)`` and ``mlp_norm(x)``; they may override ``mix_tokens`` (default: residual
    attention).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_module("parallel_mlp", None)

    def attention_branch(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        """(B,H,W,C) -> (B,H,W,C): the attention's contribution, without the residual."""
        raise NotImplementedError

    def mlp_norm(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H,W,C) -> (B,H,W,C): the normalisation in front of the MLP (and of ``parallel_mlp``)."""
        raise NotImplementedError

    def mix_tokens(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        """(B,H,W,C) -> (B,H,W,C): everything before the MLP branch."""
        return x + self.attention_branch(x, context)

    def body(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        x = self.mix_tokens(x, context)
        normed = self.mlp_norm(x)
        out = x + self.mlp(normed)
        if self.parallel_mlp is not None:
            out = out + self.parallel_mlp(normed, context)
        return out
