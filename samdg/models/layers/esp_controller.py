"""ESP-MedSAM's modality controller: per-controller key/value prompt tokens and expert MLPs in every attention block.

A controller k is, in every transformer block of the encoder, one learnable token per head appended to the keys
and values of the attention (one tensor used as both key and value, as the released code does) and an expert MLP
(LayerNorm -> C -> 4C -> GELU -> C) whose output is added beside the block's MLP. The logit bias on the prompt token
(one scalar per block) is shared by all controllers (the backbone takes one bias per attention module).

Which controller serves which image travels in the backbone context as ``context["controller_weights"]``: (B,M)
weights over the M controllers, one-hot for an image whose domain/modality owns a controller, uniform (the mean of
all controllers, ESP-MedSAM's unseen rule in samdg) otherwise. Tokens and expert outputs are the weighted sums, so
every controller gets a gradient (zero for unselected ones) in every step, as DDP requires.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from samdg.models.backbones.blocks import TransformerBlock
from samdg.models.backbones.kv_prompt import KVTokens

WEIGHTS_KEY = "controller_weights"

# The released init of the prompt tokens: uniform in +-sqrt(6 / (3 * 16 * 16 + 16)) (a ViT-B patch's xavier bound).
RELEASED_TOKEN_BOUND = math.sqrt(6.0 / (3 * 16 * 16 + 16))


def controller_weights(context: dict, count: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B,M) controller weights from the context; without them, every image gets controller 0."""
    weights = context.get(WEIGHTS_KEY)
    if weights is None:
        weights = torch.zeros(batch, count, device=device)
        weights[:, 0] = 1.0
    if weights.shape[-1] != count:
        raise ValueError(f"controller weights for {weights.shape[-1]} controllers; this module has {count}")
    return weights


class ControllerPrompt(nn.Module):
    """The ``kv_prompt`` slot: M sets of one token per head, (M,heads,1,head_dim), mixed per image by the weights.

    Returns :class:`KVTokens` with key = value (B,heads,1,head_dim) and the shared logit bias (1,1).
    """

    def __init__(self, num_heads: int, head_dim: int, num_controllers: int,
                 init_range: float = RELEASED_TOKEN_BOUND) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(num_controllers, num_heads, 1, head_dim).uniform_(-init_range,
                                                                                                 init_range))
        self.logit_bias = nn.Parameter(torch.zeros(1, 1))

    def forward(self, context: dict) -> KVTokens:
        count = self.tokens.shape[0]
        batch = len(context["images"]) if "images" in context else 1
        weights = controller_weights(context, count, batch, self.tokens.device).to(self.tokens.dtype)
        tokens = torch.einsum("bm,mhtd->bhtd", weights, self.tokens)
        return KVTokens(tokens, tokens, self.logit_bias)


class ExpertMLPs(nn.Module):
    """The ``parallel_mlp`` slot: M expert MLPs, (B,H,W,C) normalised block input -> (B,H,W,C) weighted sum.

    Each expert is LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C (the released ``med_dah``). Its LayerNorm sees
    the block's normalised MLP input (what the slot receives) rather than the raw block state.
    """

    def __init__(self, dim: int, num_controllers: int, hidden_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * hidden_ratio)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in range(num_controllers))

    def forward(self, normed: torch.Tensor, context: dict) -> torch.Tensor:
        weights = controller_weights(context, len(self.experts), normed.shape[0], normed.device).to(normed.dtype)
        if len(self.experts) == 1:
            return self.experts[0](normed) * weights[:, 0, None, None, None]
        outputs = torch.stack([expert(normed) for expert in self.experts], dim=1)  # (B,M,H,W,C)
        return torch.einsum("bm,bmhwc->bhwc", weights, outputs)


def install_controllers(encoder: nn.Module, num_controllers: int) -> list[nn.Module]:
    """Fill every attention's ``kv_prompt`` and every transformer block's ``parallel_mlp`` of a backbone with
    ``num_controllers`` controllers; returns the modules added (what trains)."""
    added: list[nn.Module] = []
    for _, attention in encoder.attention_modules():
        attention.kv_prompt = ControllerPrompt(attention.num_heads, attention.head_dim, num_controllers)
        added.append(attention.kv_prompt)
    for stage in encoder.stages():
        for block in stage.blocks:
            if isinstance(block, TransformerBlock):
                block.parallel_mlp = ExpertMLPs(stage.channels, num_controllers)
                added.append(block.parallel_mlp)
    if not added:
        raise ValueError("the encoder has no attention block to host a modality controller")
    return added
