"""Freezing, unfreezing and counting parameters by name pattern.

Patterns are shell-style globs matched against full parameter names (``"image_encoder.*"``, ``"*adapter*"``,
``"image_encoder.blocks.1[01].*"``). A pattern that matches no parameter is an error: it is almost always a typo.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

from torch import nn

from samdg.errors import SamdgError


def _as_patterns(patterns: str | Iterable[str]) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def set_trainable(module: nn.Module, patterns: str | Iterable[str], trainable: bool) -> int:
    """Set ``requires_grad`` of every parameter matching any pattern; returns how many parameter tensors matched."""
    patterns = _as_patterns(patterns)
    named = list(module.named_parameters())
    matched = 0
    for pattern in patterns:
        hits = [parameter for name, parameter in named if fnmatchcase(name, pattern)]
        if not hits:
            raise SamdgError(f"no parameter of {type(module).__name__} matches the pattern '{pattern}'")
    for name, parameter in named:
        if any(fnmatchcase(name, pattern) for pattern in patterns):
            parameter.requires_grad_(trainable)
            matched += 1
    return matched


def freeze(module: nn.Module, patterns: str | Iterable[str] = "*") -> int:
    return set_trainable(module, patterns, False)


def unfreeze(module: nn.Module, patterns: str | Iterable[str] = "*") -> int:
    return set_trainable(module, patterns, True)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def count_trainable(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def trainable_names(module: nn.Module) -> list[str]:
    return [name for name, parameter in module.named_parameters() if parameter.requires_grad]
