"""The method registry: ``@register_method(name, settings=SettingsDataclass)`` on a method class.

A method is built as ``cls(sam, settings, label_spec)`` where ``sam`` is the ``SamModel`` from
``samdg.models.backbones.build_sam``, ``settings`` the method's block of ``plans.methods`` (a plain dict, checked
and completed by the method's settings dataclass, see :mod:`samdg.models.methods.settings`) and ``label_spec`` the
dataset's :class:`samdg.labels.LabelSpec`. The trainer and predictor only use the interface of
:class:`samdg.models.methods.base.SegmentationMethod`. Registration is explicit (importing
``samdg.models.methods`` imports every method module); nothing is discovered by scanning folders.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from samdg.errors import SamdgError
from samdg.models.methods.settings import MethodSettings, checked_settings
from samdg.utils.schema import to_plain

_METHODS: dict[str, type] = {}


def register_method(name: str, settings: type = MethodSettings) -> Callable[[type], type]:
    """Class decorator that adds a method under ``name`` with its settings dataclass (a MethodSettings subclass)."""
    if not (isinstance(settings, type) and issubclass(settings, MethodSettings) and dataclasses.is_dataclass(settings)):
        raise TypeError(f"method '{name}': settings must be a dataclass derived from MethodSettings")

    def decorate(cls: type) -> type:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method '{name}' is already registered by {_METHODS[name].__qualname__}")
        cls.method_name = name
        cls.settings_class = settings
        _METHODS[name] = cls
        return cls

    return decorate


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The registered class; an unknown name is a :class:`SamdgError` that lists the registered methods."""
    if name not in _METHODS:
        raise SamdgError(f"unknown method '{name}'; registered methods: {', '.join(list_methods()) or 'none'}")
    return _METHODS[name]


def settings_classes() -> dict[str, type]:
    """The settings dataclass of every registered method, by name."""
    return {name: cls.settings_class for name, cls in sorted(_METHODS.items())}


def default_settings(name: str) -> dict[str, Any]:
    """The method's default settings as plain JSON data (what the planner writes into ``plans.methods[name]``)."""
    return to_plain(get_method(name).settings_class())


def resolve_settings(name: str, settings: Any = None):
    """The method's settings dataclass from ``settings`` (plain dict, None = defaults, or an instance): defaults
    fill missing keys; an unknown key, a wrong type or a value out of bounds is a SamdgError naming
    ``methods.<name>.<key>``."""
    return checked_settings(get_method(name).settings_class, settings, f"methods.{name}")


def build_method(name: str, sam, settings: Any, label_spec):
    """Instantiate a registered method with its checked settings; only its declared trainable parameters
    require gradients."""
    method = get_method(name)(sam, resolve_settings(name, settings), label_spec)
    method.freeze_all_but_trainable()
    return method
