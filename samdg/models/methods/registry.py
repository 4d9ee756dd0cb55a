"""The method registry: ``@register_method(name, default_settings=...)`` on an nn.Module class.

A method is built as ``cls(sam, settings, label_spec)`` where ``sam`` is the ``SamModel`` from
``samdg.models.backbones.build_sam``, ``settings`` the method's block of ``plans.methods`` (defaults merged with
whatever the plan or a CLI override changed) and ``label_spec`` the dataset's :class:`samdg.labels.LabelSpec`.
The trainer and predictor only use the interface of :class:`samdg.models.methods.base.SegmentationMethod`.
Registration is explicit (importing ``samdg.models.methods`` imports every method module); nothing is
discovered by scanning folders.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from samdg.errors import SamdgError


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    default_settings: dict[str, Any]


_METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, default_settings: dict[str, Any] | None = None) -> Callable[[type], type]:
    """Class decorator that adds a method under ``name`` with its default settings (plain JSON data)."""

    def decorate(cls: type) -> type:
        if name in _METHODS and _METHODS[name].cls is not cls:
            raise ValueError(f"method '{name}' is already registered by {_METHODS[name].cls.__qualname__}")
        cls.method_name = name
        _METHODS[name] = MethodEntry(name, cls, copy.deepcopy(default_settings or {}))
        return cls

    return decorate


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The registered class; an unknown name is a :class:`SamdgError` that lists the registered methods."""
    if name not in _METHODS:
        raise SamdgError(f"unknown method '{name}'; registered methods: {', '.join(list_methods()) or 'none'}")
    return _METHODS[name].cls


def default_settings(name: str) -> dict[str, Any]:
    """A fresh copy of the method's default settings (what the planner writes into ``plans.methods[name]``)."""
    get_method(name)
    return copy.deepcopy(_METHODS[name].default_settings)


def resolve_settings(name: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``settings``; a key the method does not know is an error naming the known keys."""
    resolved = default_settings(name)
    for key, value in (settings or {}).items():
        if key not in resolved:
            known = ", ".join(sorted(resolved)) or "none"
            raise SamdgError(f"method '{name}' has no setting '{key}' (settings: {known})")
        resolved[key] = value
    return resolved


def build_method(name: str, sam, settings: dict[str, Any] | None, label_spec):
    """Instantiate a registered method with its resolved settings."""
    return get_method(name)(sam, resolve_settings(name, settings), label_spec)
