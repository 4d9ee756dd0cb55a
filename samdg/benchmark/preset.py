"""The papers' benchmark protocols as data: ``samdg_benchmark --preset NAME``.

Each preset is one JSON file in ``samdg/benchmark/presets/<name>.json`` (shipped with the package). It sets what
the paper fixed — method, protocol, source and target domains, the validation split, plan overrides such as the
input size, whether to add the papers' Dice columns — and records the published numbers with where they come from.
Options given on the command line win over the preset's (the command prints which came from where).

Fields (every one required, ``null`` where it does not apply):

=============== ==========================================================================================
name            the file's name without ``.json``
description     what the preset reproduces, in one or two sentences
paper           the paper and table
dataset         which converted dataset it expects (the domain names below are the converter's)
method          a registered method or external baseline, or null (then ``-m`` is required)
protocol        ``single-source`` or ``leave-one-domain-out``
sources         source domains (single-source) or held-out domains (leave-one-domain-out); null = all
targets         the domains tested (the matrix columns); null = all
split           ``all`` (train on every case of the sources) or ``first90`` (DeSAM: first 90 % train, last
                10 % validate, see samdg.training.splits)
overrides       plans entries, as ``--override KEY=VALUE`` takes them (e.g. ``{"sam.input_size": 384}``)
paper_metrics   add the papers' inflated Dice columns (``--paper-metrics``)
published       list of ``{result, value, unit, compare_with, source, verified}``: the published numbers
notes           deviations and caveats, one sentence each
=============== ==========================================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samdg.benchmark.protocols import PROTOCOLS
from samdg.errors import SamdgError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SPLITS = ("all", "first90")
PUBLISHED_FIELDS = {"result": str, "value": (int, float), "unit": str, "compare_with": str, "source": str,
                    "verified": bool}
_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "description": (str,), "paper": (str,), "dataset": (str,), "method": (str, type(None)),
    "protocol": (str,), "sources": (list, type(None)), "targets": (list, type(None)), "split": (str,),
    "overrides": (dict,), "paper_metrics": (bool,), "published": (list,), "notes": (list,),
}


@dataclass(frozen=True)
class Preset:
    """One validated preset file (fields as in the module docstring)."""

    name: str
    description: str
    paper: str
    dataset: str
    method: str | None
    protocol: str
    sources: tuple[str, ...] | None
    targets: tuple[str, ...] | None
    split: str
    overrides: dict[str, Any]
    paper_metrics: bool
    published: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    path: Path


def list_presets() -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Preset:
    """Read and validate ``presets/<name>.json``; an unknown name lists the shipped ones."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise SamdgError(f"--preset {name}: no such preset; shipped presets: {', '.join(list_presets())}")
    return read_preset(path)


def read_preset(path: Path) -> Preset:
    """Validate one preset file -> Preset; any problem is a SamdgError naming the file and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SamdgError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise SamdgError(f"{path}: must hold one JSON object")
    missing, unknown = sorted(set(_FIELDS) - set(data)), sorted(set(data) - set(_FIELDS))
    if missing or unknown:
        raise SamdgError(f"{path}: " + "; ".join(filter(None, [missing and f"missing field(s) {', '.join(missing)}",
                                                               unknown and f"unknown field(s) {', '.join(unknown)}"])))
    for field, types in _FIELDS.items():
        if not isinstance(data[field], types):
            raise SamdgError(f"{path}: field '{field}' has the wrong type ({type(data[field]).__name__})")
    if data["name"] != path.stem:
        raise SamdgError(f"{path}: field 'name' is '{data['name']}', not the file's name '{path.stem}'")
    if data["protocol"] not in PROTOCOLS:
        raise SamdgError(f"{path}: protocol '{data['protocol']}' is not one of {', '.join(PROTOCOLS)}")
    if data["split"] not in SPLITS:
        raise SamdgError(f"{path}: split '{data['split']}' is not one of {', '.join(SPLITS)}")
    for field in ("sources", "targets", "notes"):
        values = data[field] or []
        if not all(isinstance(v, str) and v for v in values):
            raise SamdgError(f"{path}: field '{field}' must list non-empty strings")
    for entry in data["published"]:
        if not isinstance(entry, dict) or set(entry) != set(PUBLISHED_FIELDS) or not all(
                isinstance(entry[k], t) and not (t is not bool and isinstance(entry[k], bool))
                for k, t in PUBLISHED_FIELDS.items()):
            raise SamdgError(f"{path}: each 'published' entry needs exactly {', '.join(PUBLISHED_FIELDS)} "
                             "(value a number, verified true or false)")
    return Preset(
        name=data["name"], description=data["description"], paper=data["paper"], dataset=data["dataset"],
        method=data["method"], protocol=data["protocol"],
        sources=None if data["sources"] is None else tuple(data["sources"]),
        targets=None if data["targets"] is None else tuple(data["targets"]), split=data["split"],
        overrides=dict(data["overrides"]), paper_metrics=data["paper_metrics"], published=tuple(data["published"]),
        notes=tuple(data["notes"]), path=path)


def describe(preset: Preset, chosen: dict[str, tuple[Any, str]]) -> list[str]:
    """Console lines: the preset, each setting with where it came from, the published numbers and the notes.

    ``chosen``: setting name -> (value in effect, ``"preset"`` or ``"command line"``).
    """
    lines = [f"preset {preset.name}: {preset.description}", f"  paper: {preset.paper}",
             f"  dataset: {preset.dataset}"]
    for setting, (value, origin) in chosen.items():
        lines.append(f"  {setting}: {_text(value)} ({origin})")
    lines.append("  options given on the command line win over the preset's")
    for entry in preset.published:
        mark = "" if entry["verified"] else " (unverified)"
        lines.append(f"  published: {entry['result']} = {entry['value']}{entry['unit']}{mark} [{entry['source']}]; "
                     f"compare with {entry['compare_with']}")
    if not preset.published:
        lines.append("  published: no number that could be verified")
    lines += [f"  note: {note}" for note in preset.notes]
    return lines


def _text(value: Any) -> str:
    if value is None:  # sources / targets not restricted
        return "all"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{key}={json.dumps(item)}" for key, item in value.items()) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def merge(preset: Preset, command_line: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """The settings in effect -> (value, origin): a command-line value (not None) wins over the preset's.

    ``command_line`` keys: method, protocol, sources, targets (``"A,B"`` text), split, overrides (dict, merged
    key by key over the preset's), paper_metrics. Sources and targets come back as ``"A,B"`` text or None.
    """
    from_preset = {"method": preset.method, "protocol": preset.protocol,
                   "sources": ",".join(preset.sources) if preset.sources else None,
                   "targets": ",".join(preset.targets) if preset.targets else None, "split": preset.split,
                   "paper_metrics": preset.paper_metrics}
    chosen = {key: (value, "preset") if command_line.get(key) is None else (command_line[key], "command line")
              for key, value in from_preset.items()}
    given = command_line.get("overrides") or {}
    origin = "preset" if not given else "command line" if not preset.overrides else "preset, command line wins"
    chosen["overrides"] = ({**preset.overrides, **given}, origin)
    return chosen
