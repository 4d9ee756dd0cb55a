"""The backbone protocol that methods program against (documentation/backbones.md).

A backbone is ``stem -> stages -> neck``. The stem (patch embedding, plus the absolute position embedding in a
ViT) gives the first stage's input; a stage is a run of blocks of one width on one token grid, optionally ending
with a downsampling; the neck gives SAM's image embedding (B,256,E,E). Layouts: blocks and their slots see
channels-last (B,H,W,C) (:mod:`samdg.models.backbones.blocks`); the stem, the stages' inputs and outputs, the
hooks and the taps are channels-first (B,C,h,w).

Extension points (all ``None`` until a method fills them, all nn.Module attributes with stable state_dict names):

- ``stem_hook(x, context) -> x``: after the stem (DAPSAM computes its low-level features here);
- ``stage_hooks[i](x, context) -> x``: after stage i (after its downsampling) (DB-SAM's channel attention);
- ``neck_hook(x, context) -> x``: before the neck (DB-SAM's fusion of its parallel branch);
- per block: ``input_adapter``, and in transformer blocks ``parallel_mlp`` and ``attn.kv_prompt``.

``context`` is a dict that travels through one forward pass: it holds ``"images"`` (the normalised input,
(B,3,S,S)), ``"stem"`` (the stem output, (B,C,h,w)) and whatever the caller passed to ``forward_features(...,
context=...)`` (e.g. ``"modality"``, (B,) long); hooks and blocks may add entries, which the later ones and the
caller see. Each block gets its own copy and its additions are merged back, which keeps gradient checkpointing
exact. ``gradient_checkpointing = True`` recomputes each block in the backward pass. BatchNorm layers whose
parameters are frozen keep their running statistics (they stay in eval mode when the backbone trains).

A family subclasses :class:`Backbone`, registers it with ``@register_family(name)`` and implements ``embed``,
``stages`` and a ``neck`` (see :mod:`samdg.models.backbones.vit` for the shortest example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from samdg.errors import SamdgError
from samdg.models.backbones.attention import PromptableAttention
from samdg.models.backbones.blocks import Block, TransformerBlock
from samdg.models.backbones.intensity import apply_intensity
from samdg.models.backbones.registry import VariantConfig


@dataclass(frozen=True)
class Stage:
    """One stage: ``blocks`` on a (C=``channels``, ``grid``) token grid, then ``downsample`` (or None) to
    (``out_channels``, ``out_grid``). ``block_taps[j]`` names the tap of block j's output (or None); ``tap`` names
    the tap of the stage output (or None). A view: the modules live where the family registered them."""

    index: int
    blocks: tuple[Block, ...]
    channels: int
    grid: tuple[int, int]
    out_channels: int
    out_grid: tuple[int, int]
    block_taps: tuple[Optional[str], ...]
    tap: Optional[str] = None
    downsample: Optional[nn.Module] = None


def _call_block(block: nn.Module, x: torch.Tensor, context: dict) -> tuple[torch.Tensor, dict]:
    # A fresh copy on every call: a recomputation under gradient checkpointing sees the same inputs again.
    local = dict(context)
    return block(x, local), local


class Backbone(nn.Module):
    """Base class of the SAM image encoders. A family provides ``embed``, ``stages`` and ``neck``."""

    family: str = ""

    def __init__(self, config: VariantConfig, num_stages: int) -> None:
        super().__init__()
        self.config = config
        self.intensity = config.intensity
        self.gradient_checkpointing = False
        self.register_module("stem_hook", None)
        self.stage_hooks = nn.ModuleList([None] * num_stages)
        self.register_module("neck_hook", None)

    # --- what a family provides ----------------------------------------------------------------------------

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,S,S) -> the stem (B,C,h,w), the first stage's input."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        """The stages in order (a fresh view on every call)."""
        raise NotImplementedError

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage output (B,C,h,w) -> image embedding (B,256,E,E)."""
        return self.neck(x)

    # --- the interface ---------------------------------------------------------------------------------------

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(self.feature_shapes())

    @property
    def default_taps(self) -> tuple[str, ...]:
        return tuple(self.config.default_taps)

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C,h,w) of every tap at the configured input size, in forward order, without running the model."""
        stages = self.stages()
        shapes = {"stem": (stages[0].channels, *stages[0].grid)}
        for stage in stages:
            shapes.update({tap: (stage.channels, *stage.grid) for tap in stage.block_taps if tap is not None})
            if stage.tap is not None:
                shapes[stage.tap] = (stage.out_channels, *stage.out_grid)
        return shapes

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

        A tap is the output of the stem, a block or a stage, before any hook at that point. ``context``: an
        optional dict seeded by the caller; hooks and blocks read and extend it, and the caller sees their
        additions afterwards.
        """
        taps = tuple(taps)
        available = self.tap_names
        unknown = [tap for tap in taps if tap not in available]
        if unknown:
            raise SamdgError(
                f"unknown feature tap(s) {unknown} for variant {self.config.name}; available: {', '.join(available)}"
            )
        size = self.config.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(
                f"{self.config.name} expects images of shape (B,3,{size},{size}), got {tuple(images.shape)}")
        normalised = self.normalize(images)
        x = self.embed(normalised)
        context = {} if context is None else context
        context.update(images=normalised, stem=x)
        features = {"stem": x} if "stem" in taps else {}
        x = self._run_hook(self.stem_hook, x, context)
        for stage in self.stages():
            x = x.permute(0, 2, 3, 1)  # blocks work channels-last
            for block, tap in zip(stage.blocks, stage.block_taps):
                x = self._run_block(block, x, context)
                if tap in taps:
                    features[tap] = x.permute(0, 3, 1, 2)
            x = x.permute(0, 3, 1, 2)
            if stage.downsample is not None:
                x = stage.downsample(x)
            if stage.tap in taps:
                features[stage.tap] = x
            x = self._run_hook(self.stage_hooks[stage.index], x, context)
        x = self._run_hook(self.neck_hook, x, context)
        return self.head(x), {tap: features[tap] for tap in taps}

    def _run_block(self, block: nn.Module, x: torch.Tensor, context: dict) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            x, updated = checkpoint(_call_block, block, x, dict(context), use_reentrant=False)
        else:
            x, updated = _call_block(block, x, context)
        context.update(updated)
        return x

    @staticmethod
    def _run_hook(hook: Optional[nn.Module], x: torch.Tensor, context: dict) -> torch.Tensor:
        return x if hook is None else hook(x, context)

    # --- finding blocks and extension points -----------------------------------------------------------------

    def named_blocks(self) -> list[tuple[str, Block]]:
        """(name, block) of every block, in forward order."""
        names = {id(module): name for name, module in self.named_modules()}
        return [(names[id(block)], block) for stage in self.stages() for block in stage.blocks]

    def transformer_blocks(self) -> list[tuple[str, TransformerBlock]]:
        """(name, block) of every attention block (slots ``parallel_mlp`` and ``attn.kv_prompt``)."""
        return [(name, block) for name, block in self.named_blocks() if isinstance(block, TransformerBlock)]

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

    def extensions(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every filled slot and hook: what methods added to the backbone."""
        found = [(name, hook) for name, hook in (("stem_hook", self.stem_hook), ("neck_hook", self.neck_hook))
                 if hook is not None]
        found += [(f"stage_hooks.{i}", hook) for i, hook in enumerate(self.stage_hooks) if hook is not None]
        for name, module in self.named_modules():
            for slot in ("input_adapter", "parallel_mlp", "kv_prompt"):
                if isinstance(module, (Block, PromptableAttention)) and getattr(module, slot, None) is not None:
                    found.append((f"{name}.{slot}", getattr(module, slot)))
        return found

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            for module in self.modules():
                affine_norm = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
                if affine_norm and not module.weight.requires_grad:
                    module.eval()
        return self
