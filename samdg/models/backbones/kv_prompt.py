"""Learnable key/value prompt tokens that a method injects into an encoder attention module.

Every attention module of a samdg backbone has a ``kv_prompt`` slot (``None`` by default). A module placed there
is called as ``kv_prompt(context)`` on every forward, with the backbone context of the block (a dict; see
:mod:`samdg.models.backbones.base`), and returns :class:`KVTokens`; the attention appends the tokens to its keys
and values (and adds ``logit_bias`` to the attention logits of those tokens). Every query, in every window,
attends to the same extra tokens; they carry no relative-position term.

Shapes: ``key`` and ``value`` are (heads, T, head_dim), shared by the whole batch, or (B, heads, T, head_dim), one
set per image (windowed attention repeats them for each window of that image); ``logit_bias`` is (heads, T) or
broadcastable to it, or ``None``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from samdg.errors import SamdgError


class KVTokens(NamedTuple):
    key: torch.Tensor
    value: torch.Tensor
    logit_bias: Optional[torch.Tensor] = None


class KeyValuePrompt(nn.Module):
    """``num_tokens`` learnable key/value tokens per head (ESP-MedSAM's modality controller style).

    ``shared=True`` uses one tensor as both key and value (as ESP-MedSAM's released code does);
    ``logit_bias=True`` adds one learnable scalar to the logits of the prompt tokens.
    ``select_by``: the name of a context entry holding a (B,) long index into ``num_choices`` token sets (e.g.
    ``"modality"``); each image then gets its own set, key/value (B, heads, T, head_dim). Without it there is one
    set, (heads, T, head_dim), for the whole batch. The logit bias is shared by all sets.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_tokens: int = 1,
        shared: bool = False,
        logit_bias: bool = False,
        init_range: float | None = None,
        select_by: str | None = None,
        num_choices: int = 1,
    ) -> None:
        super().__init__()
        bound = init_range if init_range is not None else (6.0 / (num_tokens + head_dim)) ** 0.5
        shape = (num_heads, num_tokens, head_dim)
        if select_by is not None:
            shape = (num_choices, *shape)
        self.select_by = select_by
        self.key = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.value = None if shared else nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.logit_bias = nn.Parameter(torch.zeros(1, 1)) if logit_bias else None

    def forward(self, context: Optional[dict] = None) -> KVTokens:
        value = self.key if self.value is None else self.value
        if self.select_by is None:
            return KVTokens(self.key, value, self.logit_bias)
        if context is None or self.select_by not in context:
            raise SamdgError(f"this key/value prompt chooses its tokens by context['{self.select_by}'], which the "
                             f"caller did not pass (forward_features(..., context={{'{self.select_by}': index}}))")
        index = torch.as_tensor(context[self.select_by], device=self.key.device).long().reshape(-1)  # (B,)
        return KVTokens(self.key[index], value[index], self.logit_bias)
