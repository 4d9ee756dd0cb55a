"""Dataclass schemas: documented, bounded fields that round-trip through JSON with their types checked.

The plans (``samdg.planning.plans``) and the methods' settings (``samdg.models.methods.settings``) are dataclass
trees written to JSON. This module is their shared machinery, below both packages:

- :func:`doc_field`: a field with its documentation and optional bounds (``minimum``, ``exclusive_minimum``,
  ``maximum``, ``exclusive_maximum``; for numbers, list items and dict values);
- :func:`from_plain` / :func:`convert`: JSON data -> dataclass, every value checked against its type hint (``int``,
  ``float``, ``bool``, ``str``, ``Literal`` choices, ``X | None``, ``list[T]``, ``dict[str, T]``, nested dataclasses)
  and its bounds; problems are one-line :class:`~samdg.errors.SamdgError` naming ``where.<key>``;
- :func:`to_plain`: dataclass -> JSON data;
- :func:`markdown_table`: the documentation table of a dataclass (key, type, default, range, meaning).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal

from samdg.errors import SamdgError

BOUNDS = ("minimum", "exclusive_minimum", "maximum", "exclusive_maximum")


def doc_field(text: str, *, minimum: float | None = None, exclusive_minimum: float | None = None,
         maximum: float | None = None, exclusive_maximum: float | None = None, **kwargs) -> Any:
    """A dataclass field documented by ``text``; numbers (also inside lists and dict values) must lie in the bounds."""
    bounds = {"minimum": minimum, "exclusive_minimum": exclusive_minimum, "maximum": maximum,
              "exclusive_maximum": exclusive_maximum}
    metadata = {"doc": text, **{name: value for name, value in bounds.items() if value is not None}}
    return field(metadata=metadata, **kwargs)


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and numpy scalars -> plain JSON types."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (``from __future__ import annotations`` makes them strings)."""
    return typing.get_type_hints(cls)


def from_plain(cls: type, data: Any, where: str):
    """JSON object ``data`` -> instance of dataclass ``cls``: unknown keys refused, missing ones take their
    defaults (required ones are an error), every value converted and checked (:func:`convert`, bounds)."""
    if not isinstance(data, dict):
        raise SamdgError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise SamdgError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = convert(data[f.name], hints[f.name], f"{where}.{f.name}")
            check_bounds(values[f.name], f.metadata, f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SamdgError(f"{where}: missing key '{f.name}'")
    return cls(**values)


def check_bounds(value: Any, metadata: Any, where: str) -> None:
    """``value`` against the bounds in a field's ``metadata`` (numbers; list items and dict values one by one)."""
    bounds = {name: metadata[name] for name in BOUNDS if name in metadata}
    if not bounds or value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_bounds(item, metadata, f"{where}.{i}")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            check_bounds(item, metadata, f"{where}.{key}")
        return
    if value != value:  # NaN compares false with every bound
        raise SamdgError(f"{where}: must be {bounds_text(metadata)}, got {value!r}")
    broken = (("minimum" in bounds and value < bounds["minimum"])
              or ("exclusive_minimum" in bounds and value <= bounds["exclusive_minimum"])
              or ("maximum" in bounds and value > bounds["maximum"])
              or ("exclusive_maximum" in bounds and value >= bounds["exclusive_maximum"]))
    if broken:
        raise SamdgError(f"{where}: must be {bounds_text(metadata)}, got {value!r}")


def bounds_text(metadata: Any) -> str:
    """The bounds of a field as text, e.g. ``> 0 and <= 1``; empty when it has none."""
    symbols = {"minimum": ">=", "exclusive_minimum": ">", "maximum": "<=", "exclusive_maximum": "<"}
    return " and ".join(f"{symbols[name]} {metadata[name]:g}" for name in BOUNDS if name in metadata)


def type_name(hint: Any) -> str:
    """A type hint as it reads in the documentation: ``list[ChannelNormalization]``, not module paths."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_])", "", str(hint))


def convert(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert JSON values (lists, dicts) into dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, where)
            except SamdgError as error:
                errors.append(str(error))
        raise SamdgError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not match {type_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise SamdgError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SamdgError(f"{where}: expected a list, got {value!r}")
        return [convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SamdgError(f"{where}: expected an object, got {value!r}")
        return {str(k): convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise SamdgError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise SamdgError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SamdgError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SamdgError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type hint {hint!r} at {where}")  # a programming error, not a user error


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{json.dumps(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{json.dumps(f.default_factory())}`"
    return "planned"


def markdown_table(cls: type, prefix: str, title: str) -> str:
    """A Markdown table of a settings dataclass: key, type, default, allowed range, meaning (from :func:`doc_field`)."""
    hints = type_hints(cls)
    rows = [title, "", "| key | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        shown = type_name(hints[f.name]).replace("|", "or")
        rows.append(f"| `{prefix}{f.name}` | `{shown}` | {_default_text(f)} | {bounds_text(f.metadata)} "
                    f"| {f.metadata.get('doc', '')} |")
    return "\n".join(rows)


