"""The backbone interface that methods program against (contract: documentation/developer/contracts.md).

A backbone is a chain ``embed -> units -> head``: the stem (patch embedding, plus the absolute position embedding
in a ViT) gives the first unit's input, the units are the ViT blocks or the TinyViT stages, and the head is SAM's
neck, giving the image embedding (B,256,E,E). The extension points:

- ``forward_features(images, taps)``: the embedding plus named intermediate features, channels-first (B,C,h,w).
- ``wrap_units(fn)``: replace unit i by ``fn(i, unit)`` (adapters, gates, cross-branch exchange). A replacement
  with ``takes_context = True`` is called as ``unit(x, context)``; the context is a dict holding ``"images"``
  (the normalised input, (B,3,S,S)) and ``"stem"`` (the first unit's input) plus whatever the caller passed and
  earlier units added. A unit gets its own copy; the entries it sets are visible to the units after it.
- ``attention_modules()`` / ``attach_kv_prompts(factory)``: the ``kv_prompt`` slot of every attention module.
- ``transformer_blocks()``: the attention blocks (ViT blocks, TinyViT blocks), whose ``mlp`` can be replaced.
- ``gradient_checkpointing``: recompute each unit in the backward pass instead of storing its activations.

Units see ``unit_layout`` tensors: channels-last (B,h,w,C) for ViT blocks (SAM's convention), channels-first
(B,C,h,w) for TinyViT stages. BatchNorm layers whose parameters are frozen keep their running statistics
(they stay in eval mode when the backbone is put in training mode).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from samdg.errors import SamdgError
from samdg.models.backbones.attention import PromptableAttention
from samdg.models.backbones.intensity import apply_intensity
from samdg.models.backbones.registry import VariantConfig


def _call_with_context(unit: nn.Module, x: torch.Tensor, context: dict) -> tuple[torch.Tensor, dict]:
    # A fresh copy on every call: a recomputation under gradient checkpointing sees the same inputs again.
    local = dict(context)
    return unit(x, local), local


class Backbone(nn.Module):
    """Base class of the SAM image encoders. Subclasses provide the stem, the units and the head."""

    unit_layout = "channels_last"

    def __init__(self, config: VariantConfig) -> None:
        super().__init__()
        self.config = config
        self.intensity = config.intensity
        self.gradient_checkpointing = False

    # --- what a family provides ----------------------------------------------------------------------------

    @property
    def units(self) -> nn.ModuleList:
        raise NotImplementedError

    def unit_tap_name(self, index: int) -> str:
        raise NotImplementedError

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C,h,w) of every tap at the configured input size, without running the model."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,S,S) -> first unit input (unit layout)."""
        raise NotImplementedError

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Last unit output -> image embedding (B,256,E,E)."""
        raise NotImplementedError

    def to_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.unit_layout == "channels_last" else x

    # --- the interface ---------------------------------------------------------------------------------------

    @property
    def tap_names(self) -> tuple[str, ...]:
        return ("stem",) + tuple(self.unit_tap_name(i) for i in range(len(self.units)))

    @property
    def default_taps(self) -> tuple[str, ...]:
        return tuple(self.config.default_taps)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> the variant's intensity convention."""
        return apply_intensity(images, self.intensity)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> image embedding (B,256,E,E)."""
        embedding, _ = self.forward_features(images)
        return embedding

    def forward_features(
        self, images: torch.Tensor, taps=(), context: Optional[dict[str, Any]] = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B,3,S,S) in [0,1] -> (embedding (B,256,E,E), {tap: (B,C,h,w)}) for the requested taps, in order.

        ``context``: an optional dict seeded by the caller; context-taking units read and extend it, and the
        caller sees their additions afterwards.
        """
        taps = tuple(taps)
        unknown = [tap for tap in taps if tap not in self.tap_names]
        if unknown:
            raise SamdgError(
                f"unknown feature tap(s) {unknown} for variant {self.config.name}; available: {', '.join(self.tap_names)}"
            )
        size = self.config.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"{self.config.name} expects images of shape (B,3,{size},{size}), got {tuple(images.shape)}")
        normalised = self.normalize(images)
        x = self.embed(normalised)
        context = {} if context is None else context
        context.update(images=normalised, stem=x)
        features = {"stem": self.to_channels_first(x)} if "stem" in taps else {}
        for index, unit in enumerate(self.units):
            x = self._run_unit(unit, x, context)
            name = self.unit_tap_name(index)
            if name in taps:
                features[name] = self.to_channels_first(x)
        return self.head(x), {tap: features[tap] for tap in taps}

    def _run_unit(self, unit: nn.Module, x: torch.Tensor, context: dict) -> torch.Tensor:
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        if not getattr(unit, "takes_context", False):
            return checkpoint(unit, x, use_reentrant=False) if recompute else unit(x)
        if recompute:
            x, updated = checkpoint(_call_with_context, unit, x, dict(context), use_reentrant=False)
        else:
            x, updated = _call_with_context(unit, x, context)
        context.update(updated)
        return x

    def wrap_units(self, wrap: Callable[[int, nn.Module], nn.Module]) -> None:
        """Replace every unit i by ``wrap(i, unit)`` (return the unit itself to leave it alone)."""
        units = self.units
        for index, unit in enumerate(list(units)):
            replacement = wrap(index, unit)
            if not isinstance(replacement, nn.Module):
                raise TypeError(f"wrap_units: the function returned {type(replacement).__name__} for unit {index}")
            units[index] = replacement

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every encoder attention module; each has a ``kv_prompt`` slot."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, PromptableAttention)]

    def attach_kv_prompts(self, factory: Callable[[str, nn.Module], Optional[nn.Module]]) -> dict[str, nn.Module]:
        """Set ``attention.kv_prompt = factory(name, attention)`` for every attention module (None skips one)."""
        attached = {}
        for name, attention in self.attention_modules():
            prompt = factory(name, attention)
            if prompt is not None:
                attention.kv_prompt = prompt
                attached[name] = prompt
        return attached

    def transformer_blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, block) of every attention block; each has ``attn``, ``mlp`` and a residual MLP branch."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and not module.weight.requires_grad:
                    module.eval()
        return self
