"""DAPSAM's encoder adaptation on the backbone protocol: one mechanism for every backbone family.

With x a block input, L the low-level features at the block's width and grid, and the block's own parts:

    L  = Linear(area_average(stem))                     stem_hook (LowLevelFeatures), once per pass
    x  = x + MLP_pre(filter(0.5 x + L))                 every block's input_adapter (GeneralizedAdapter)
    x  = mix_tokens(x)                                   the frozen block (attention; TinyViT: + its conv branch)
    xn = mlp_norm(x)                                     the normalised input of the block's MLP
    x  = x + mlp(xn) + 0.5 MLP_par(filter(xn + L))      every transformer block's parallel_mlp (ParallelAdapter)

Conv blocks (TinyViT's MBConv) have no MLP and get the input adapter only. Blocks of the same width and grid share
one projection of the stem (SAM's ViT: one for all blocks; TinyViT: one per stage).
"""

from __future__ import annotations

import re

from samdg.models.backbones.base import Backbone
from samdg.models.backbones.blocks import TransformerBlock
from samdg.models.layers.adapters import GeneralizedAdapter, ParallelAdapter
from samdg.models.layers.low_level_features import LowLevelFeatures


def install_dapsam_adapters(encoder: Backbone, hidden_ratio: float, width_gated: bool = False,
                            scrambled: bool = False, input_scale: float = 0.5, parallel_scale: float = 0.5) -> None:
    """Fill ``encoder``'s stem hook and block slots with DAPSAM's modules (bottleneck = ``hidden_ratio`` x width)."""
    stages = encoder.stages()
    targets: list[tuple[int, tuple[int, int]]] = []  # (width, grid) of each stem projection, in first-use order
    for stage in stages:
        if (stage.channels, stage.grid) not in targets:
            targets.append((stage.channels, stage.grid))
    encoder.stem_hook = LowLevelFeatures(stages[0].channels, targets, scrambled)
    for stage in stages:
        source = targets.index((stage.channels, stage.grid))
        hidden_dim = max(1, int(stage.channels * hidden_ratio))
        for block in stage.blocks:
            block.input_adapter = GeneralizedAdapter(stage.channels, hidden_dim, source, input_scale, width_gated)
            if isinstance(block, TransformerBlock):
                block.parallel_mlp = ParallelAdapter(stage.channels, hidden_dim, source, parallel_scale)


# State_dict names of samdg's first DAPSAM, whose adapters wrapped ViT blocks and TinyViT stages (as ``.unit``).
_LEGACY_NAMES = [
    (re.compile(r"^low_level_features\."), "image_encoder.stem_hook."),
    (re.compile(r"^(image_encoder\.(?:blocks|layers)\.\d+\.)unit\."), r"\1"),
    (re.compile(r"^(image_encoder\.blocks\.\d+\.)generalized_adapter\."), r"\1input_adapter."),
    (re.compile(r"^(image_encoder\.blocks\.\d+\.)parallel_adapter\."), r"\1parallel_mlp."),
    (re.compile(r"^(image_encoder\.layers\.\d+\.)generalized_adapters\.(\d+)\."), r"\1blocks.\2.input_adapter."),
    (re.compile(r"^(image_encoder\.layers\.\d+\.)parallel_adapters\.(\d+)\."), r"\1blocks.\2.parallel_mlp."),
]


def upgrade_legacy_dapsam_keys(module, state_dict: dict, prefix: str, *_) -> None:
    """A load_state_dict pre-hook for the DAPSAM method: renames keys written before the block protocol."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        name = key[len(prefix):]
        renamed = name
        for pattern, replacement in _LEGACY_NAMES:
            renamed = pattern.sub(replacement, renamed)
        if renamed != name:
            state_dict[prefix + renamed] = state_dict.pop(key)
