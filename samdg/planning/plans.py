"""The plans file: every choice the planner made, as typed data that round-trips through JSON.

``samdgPlans.json`` is the only configuration of preprocessing, training and prediction. Each field is a
dataclass field whose ``metadata["doc"]`` explains it; ``documentation/plans.md`` is generated from those docs
(:func:`field_reference_markdown`), so the page cannot drift from the code. A field may also carry bounds
(``_doc(..., minimum=0)``, ``exclusive_minimum``, ``maximum``, ``exclusive_maximum``), checked on load and on
override. Users change entries with ``apply_overrides`` (the ``--override key=value`` option), which validates keys,
types and bounds and records the change in ``decisions``.

The same machinery types the methods' settings: ``plans.methods[name]`` stays a plain JSON object, but every block of
a registered method is checked against (and completed from) the method's settings dataclass when plans are loaded,
and ``methods.<name>.<key>`` overrides are typed by that dataclass (see ``samdg.models.methods.settings``).

Axis orders: "canonical" is the (Z,Y,X) = (S,A,R) order of :mod:`samdg.imageio`; "transposed" is
(slice, row, col) after ``transpose_forward``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from samdg.errors import SamdgError
from samdg.utils.files import atomic_write_json, load_json
from samdg.utils.schema import (
    check_bounds,
    convert,
    from_plain,
    markdown_table,
    to_plain,
    type_hints,
)
from samdg.utils.schema import doc_field as _doc  # short: it opens every field below

SCHEMA_VERSION = 1
PLANS_NAME = "samdgPlans"
DATA_IDENTIFIER = "samdgPlans_2d"

NormalizationScheme = Literal["ct_clip_scale", "percentile_clip_scale", "rgb_scale", "minmax"]
MappingMode = Literal["replicate", "context", "modalities", "rgb"]
Augmentation = Literal["default", "dg_strong", "none", "dg_gin", "dg_slaug", "dg_fourier", "dg_all"]


@dataclass
class ChannelNormalization:
    """How one input channel is mapped to [0, 1]."""

    scheme: NormalizationScheme = _doc(
        "`ct_clip_scale`: clip to the dataset-wide [clip_low, clip_high] then scale to [0,1] (CT, calibrated HU); "
        "`percentile_clip_scale`: clip each case to its own `percentiles` of nonzero voxels then scale (MR, other "
        "grey); `rgb_scale`: divide by clip_high (255 for 8-bit); `minmax`: each case's min..max to [0,1]")
    clip_low: float | None = _doc("lower clip value (`ct_clip_scale`, `rgb_scale`), else null", default=None)
    clip_high: float | None = _doc("upper clip value (`ct_clip_scale`, `rgb_scale`), else null", default=None)
    percentiles: list[float] | None = _doc("per-case percentiles of nonzero voxels (`percentile_clip_scale`)",
                                           default=None)


@dataclass
class ChannelMapping:
    """How the C preprocessed channels become SAM's 3 input channels (see ``sam_input.slice_to_sam_channels``)."""

    mode: MappingMode = _doc(
        "`replicate`: one grey channel three times; `context`: one channel at slices s+offset (2.5D); "
        "`modalities`: up to three channels side by side; `rgb`: the image's own R,G,B")
    channels: list[int] = _doc("data channel index feeding each of SAM's 3 input channels")
    slice_offsets: list[int] = _doc("slice offset of each SAM channel (non-zero only in `context` mode; clamped at "
                                     "the volume ends)", default_factory=lambda: [0, 0, 0])


@dataclass
class SamSettings:
    """The SAM variant and how slices are fitted to it."""

    variant: str = _doc("backbone variant name in the registry (`samdg.models.backbones`)")
    checkpoint: str | None = _doc("weights file; null = the variant's default (or a random init for tiny variants)")
    input_size: int = _doc("square input side in pixels; slices are resized longest-side-first and zero-padded")
    intensity: str = _doc("the variant's intensity convention (`unit_range` or `sam_meanstd_255`), applied by the "
                          "backbone on the [0,1] input")
    inplane_crop: list[int] | None = _doc(
        "in-plane crop (rows, cols, preprocessed pixels) taken from a slice before fitting it to the input; "
        "null = the whole slice", default=None)


@dataclass
class TrainingSettings:
    """Training defaults; the trainer reads them, the CLI may override them."""

    batch_size: int = _doc("slices per batch on a GPU (from the GPU memory and the variant's per-sample estimate)")
    batch_size_cpu: int = _doc("slices per batch when training on the CPU", default=2)
    num_epochs: int = _doc("epochs", default=100)
    iterations_per_epoch: int = _doc("batches per epoch", default=250)
    oversample_foreground_percent: float = _doc("share of each batch forced to contain foreground", default=0.33)
    num_workers: int = _doc("data-loading worker processes", default=4)
    augmentation: Augmentation = _doc("`default` (nnU-Net-like), `dg_strong` (intensity-heavy, for domain "
                                      "shift), a DG preset (`dg_gin`, `dg_slaug`, `dg_fourier`, `dg_all`) or "
                                      "`none`", default="default")
    embedding_cache_views: int = _doc("augmented views encoded per training slice by an embedding cache with "
                                      "augmentation on", default=8, minimum=1)
    embedding_cache_refresh_epochs: int = _doc("the cached views are drawn anew every this many epochs (0: never)",
                                               default=0, minimum=0)


@dataclass
class Decision:
    """One planner decision and the rule that produced it."""

    key: str = _doc("dotted plans key the decision set")
    value: Any = _doc("the value chosen")
    reason: str = _doc("why")


@dataclass
class Plans:
    """The whole plan of a dataset (``samdgPlans.json``)."""

    dataset_name: str = _doc("DatasetXXX_Name")
    channel_names: dict[str, str] = _doc("dataset.json `channel_names`")
    modalities: list[str] = _doc("modality of each data channel: `CT`, `MR`, `RGB` or `other`")
    labels: dict[str, Any] = _doc("dataset.json `labels` (name -> int or list of ints for regions)")
    regions_class_order: list[int] | None = _doc("dataset.json `regions_class_order` (region datasets only)")
    is_2d: bool = _doc("true for 2D image datasets (.png/.tif/...), stored as single-slice volumes")
    slice_axis: int = _doc("canonical axis the 2D slices are taken across (0 = axial for (S,A,R))")
    transpose_forward: list[int] = _doc("canonical axes -> (slice, row, col)")
    transpose_backward: list[int] = _doc("inverse permutation of `transpose_forward`")
    original_median_spacing: list[float] = _doc("median spacing over cases (mm, transposed order)")
    original_median_shape: list[int] = _doc("median shape after cropping to nonzero (transposed order)")
    target_spacing: list[float] = _doc("spacing after preprocessing (transposed); the slice spacing is kept, only "
                                       "the in-plane axes are resampled")
    median_shape_after_resampling: list[int] = _doc("median preprocessed shape (transposed), for information")
    normalization: list[ChannelNormalization] = _doc("one entry per data channel")
    channel_mapping: ChannelMapping = _doc("data channels -> SAM's 3 input channels")
    crop_to_nonzero: bool = _doc("crop each case to the bounding box of nonzero voxels (all channels) first")
    sam: SamSettings = _doc("SAM variant settings")
    training: TrainingSettings = _doc("training defaults")
    methods: dict[str, dict[str, Any]] = _doc("settings of every registered method, by method name (see the "
                                             "method settings below)")
    decisions: list[Decision] = _doc("every planner decision with its reason, user overrides last",
                                     default_factory=list)
    schema_version: int = _doc("plans schema version (migrated on load)", default=SCHEMA_VERSION)
    plans_name: str = _doc("plans identifier", default=PLANS_NAME)
    data_identifier: str = _doc("name of the folder holding the preprocessed cases", default=DATA_IDENTIFIER)

    # ----------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plans") -> "Plans":
        data = migrate(copy.deepcopy(data), source)
        plans = from_plain(cls, data, source)
        _complete_method_blocks(plans, source)
        plans.validate(source)
        return plans

    def save(self, path: str | Path) -> None:
        self.validate(str(path))
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        return cls.from_dict(load_json(path), str(path))

    # ------------------------------------------------------------------------------------------ queries
    @property
    def num_channels(self) -> int:
        return len(self.normalization)

    def decision(self, key: str) -> Decision | None:
        """The latest decision recorded for ``key`` (a user override wins over the planner's)."""
        for entry in reversed(self.decisions):
            if entry.key == key:
                return entry
        return None

    def preprocessing_hash(self) -> str:
        """Hash of everything that changes the preprocessed arrays; a changed hash re-preprocesses a case."""
        relevant = {k: getattr(self, k) for k in ("schema_version", "data_identifier", "transpose_forward",
                                                   "target_spacing", "crop_to_nonzero", "is_2d")}
        relevant["normalization"] = [to_plain(n) for n in self.normalization]
        relevant["code_version"] = PREPROCESSING_CODE_VERSION
        text = json.dumps(relevant, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def validate(self, source: str = "plans") -> None:
        """Cross-field consistency and the method blocks' types and bounds; raises SamdgError naming the key."""
        problems = []
        if sorted(self.transpose_forward) != [0, 1, 2]:
            problems.append(f"transpose_forward {self.transpose_forward} is not a permutation of [0, 1, 2]")
        elif [self.transpose_forward.index(i) for i in range(3)] != list(self.transpose_backward):
            problems.append("transpose_backward is not the inverse of transpose_forward")
        elif self.transpose_forward[0] != self.slice_axis:
            problems.append(f"transpose_forward must start with slice_axis ({self.slice_axis})")
        if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
            problems.append(f"target_spacing {self.target_spacing} must be 3 positive numbers")
        if len(self.modalities) != len(self.normalization):
            problems.append(f"normalization has {len(self.normalization)} entries for {len(self.modalities)} channels")
        for i, norm in enumerate(self.normalization):
            if norm.scheme in ("ct_clip_scale", "rgb_scale") and (norm.clip_low is None or norm.clip_high is None
                                                                  or norm.clip_high <= norm.clip_low):
                problems.append(f"normalization.{i}: {norm.scheme} needs clip_low < clip_high")
            percentiles = norm.percentiles
            if norm.scheme == "percentile_clip_scale" and (not percentiles or len(percentiles) != 2
                                                           or not 0 <= percentiles[0] < percentiles[1] <= 100):
                problems.append(f"normalization.{i}: percentile_clip_scale needs percentiles [low, high] in 0..100")
        mapping = self.channel_mapping
        if len(mapping.channels) != 3 or len(mapping.slice_offsets) != 3:
            problems.append("channel_mapping.channels and .slice_offsets need exactly 3 entries")
        elif any(not 0 <= c < len(self.normalization) for c in mapping.channels):
            problems.append(f"channel_mapping.channels {mapping.channels} refers to a channel that does not exist "
                            f"({len(self.normalization)} channels)")
        if self.sam.input_size < 16:
            problems.append(f"sam.input_size {self.sam.input_size} is too small")
        if self.sam.inplane_crop is not None and (len(self.sam.inplane_crop) != 2 or min(self.sam.inplane_crop) < 1):
            problems.append("sam.inplane_crop must be null or [rows, cols]")
        t = self.training
        if (min(t.batch_size, t.batch_size_cpu, t.num_epochs, t.iterations_per_epoch) < 1
                or t.num_workers < 0):
            problems.append("training: batch sizes, num_epochs and iterations_per_epoch must be >= 1, num_workers >= 0")
        if not 0 <= t.oversample_foreground_percent <= 1:
            problems.append("training.oversample_foreground_percent must lie in [0, 1]")
        if problems:
            raise SamdgError(f"{source}: " + "; ".join(problems))
        for name, block in self.methods.items():  # each registered method's block against its settings dataclass
            typed_method_block(name, block, f"{source}: methods.{name}")


# Bump when the preprocessing code changes its output for the same plan, so old preprocessed cases are redone.
PREPROCESSING_CODE_VERSION = 1


# --------------------------------------------------------------------------------------------- migration
def _migrations() -> dict[int, typing.Callable[[dict], dict]]:
    """version -> function turning a plans dict of that version into version + 1 (none yet)."""
    return {}


def migrate(data: dict[str, Any], source: str = "plans") -> dict[str, Any]:
    """Bring a plans dict written by an older samdg to the current schema; refuse newer or unversioned files."""
    if not isinstance(data, dict):
        raise SamdgError(f"{source}: a plans file must hold a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise SamdgError(f"{source}: no integer 'schema_version'; not a samdg plans file")
    if version > SCHEMA_VERSION:
        raise SamdgError(f"{source}: schema_version {version} was written by a newer samdg (this one reads "
                         f"<= {SCHEMA_VERSION}); upgrade samdg")
    steps = _migrations()
    while version < SCHEMA_VERSION:
        if version not in steps:
            raise SamdgError(f"{source}: no migration from schema_version {version}; re-run samdg_plan_and_preprocess")
        data = steps[version](data)
        version += 1
        data["schema_version"] = version
    return data


# ----------------------------------------------------------------------------------------------- method blocks
def method_settings_classes() -> dict[str, type]:
    """The settings dataclass of every registered method, by name (the registry lives with the models)."""
    from samdg.models.methods import settings_classes

    return settings_classes()


def typed_method_block(name: str, block: Any, where: str):
    """A method's block of ``plans.methods`` as its settings dataclass: types and bounds checked, keys the block
    lacks (settings added since it was written) filled with their defaults. ``None`` for an unregistered method."""
    cls = method_settings_classes().get(name)
    return None if cls is None else from_plain(cls, {} if block is None else block, where)


def _complete_method_blocks(plans: "Plans", source: str) -> None:
    """Check every registered method's block and fill in its defaults (blocks of unknown methods stay as they are)."""
    for name, block in list(plans.methods.items()):
        settings = typed_method_block(name, block, f"{source}.methods.{name}")
        if settings is not None:
            plans.methods[name] = to_plain(settings)


# ----------------------------------------------------------------------------------------------- overrides
def _resolve(root: Any, hint: Any, parts: list[str], key: str):
    """Walk a dotted key; return (container, last part, hint of the last part, metadata of its dataclass field).

    The metadata (doc and bounds) is that of the last dataclass field on the way: a list entry or dict value
    inherits the bounds of the field that holds the list or dict.
    """
    node, node_hint, metadata = root, hint, {}
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(node):
            hints = type_hints(type(node))
            if part not in hints:
                raise SamdgError(f"--override {key}: unknown key '{part}'; valid keys here: {', '.join(hints)}")
            child, child_hint = getattr(node, part), hints[part]
            metadata = {f.name: f for f in dataclasses.fields(node)}[part].metadata
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SamdgError(f"--override {key}: '{part}' is not an index of a list of {len(node)} entries")
            child, child_hint = node[int(part)], _element_hint(node_hint, 0)
        elif isinstance(node, dict):
            if part not in node:
                raise SamdgError(f"--override {key}: unknown key '{part}'; valid keys here: "
                                 f"{', '.join(node) or 'none'}")
            child, child_hint = node[part], _element_hint(node_hint, 1)
        else:
            raise SamdgError(f"--override {key}: '{parts[depth - 1]}' has no sub-keys")
        if last:
            return node, part, child_hint, metadata
        node, node_hint = child, child_hint
    raise SamdgError("--override: empty key")


def _element_hint(hint: Any, index: int) -> Any:
    """The item type of a ``list[T]`` (index 0) or the value type of a ``dict[K, V]`` (index 1), also inside
    ``X | None``."""
    options = [hint] if typing.get_origin(hint) in (list, dict) else [
        a for a in typing.get_args(hint) if typing.get_origin(a) in (list, dict)]
    args = typing.get_args(options[0]) if options else ()
    return args[index] if len(args) > index else Any


def valid_override_keys(plans: Plans) -> list[str]:
    """Every dotted key ``apply_overrides`` accepts for ``plans`` (lists by index, method settings by name)."""
    keys: list[str] = []
    typed = method_settings_classes()

    def walk(node: Any, prefix: str) -> None:
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                if f.name == "decisions":
                    continue
                keys.append(prefix + f.name)
                walk(getattr(node, f.name), f"{prefix}{f.name}.")
        elif isinstance(node, dict) and prefix == "methods.":
            for name, block in node.items():
                keys.append(prefix + name)
                settings = typed_method_block(name, block, f"methods.{name}") if name in typed else None
                walk(settings if settings is not None else block, f"{prefix}{name}.")
        elif isinstance(node, dict) and prefix.startswith("methods."):
            for k, v in node.items():
                keys.append(prefix + k)
        elif isinstance(node, list) and node and dataclasses.is_dataclass(node[0]):
            for i, v in enumerate(node):
                walk(v, f"{prefix}{i}.")

    walk(plans, "")
    return keys


def _set(container: Any, last: str, value: Any) -> Any:
    """Put ``value`` at ``container[last]`` (list index, dict key or dataclass field); return the old value."""
    if isinstance(container, list):
        old, container[int(last)] = container[int(last)], value
    elif isinstance(container, dict):
        old, container[last] = container[last], value
    else:
        old = getattr(container, last)
        setattr(container, last, value)
    return old


def _override_method_setting(plans: Plans, parts: list[str], value: Any, key: str) -> tuple[Any, Any]:
    """``methods.<name>.<key>[...] = value`` typed and bounded by the method's settings dataclass; returns (new
    value, old value). Unregistered methods' blocks are free-form (the type of the current value is kept)."""
    name, where = parts[1], f"--override {key}"
    if name not in method_settings_classes():
        container, last, hint, metadata = _resolve(plans.methods, dict[str, dict[str, Any]], parts[1:], key)
        converted = convert(value, hint if hint is not Any else _hint_of_value(container[last]), where)
        return converted, _set(container, last, converted)
    settings = typed_method_block(name, plans.methods.get(name), f"methods.{name}")
    if len(parts) == 2:  # the whole block as one JSON object
        new = typed_method_block(name, value, where)
        plans.methods[name] = to_plain(new)
        return to_plain(new), to_plain(settings)
    container, last, hint, metadata = _resolve(settings, type(settings), parts[2:], key)
    converted = convert(value, hint, where)
    check_bounds(converted, metadata, where)
    old = _set(container, last, converted)
    plans.methods[name] = to_plain(settings)
    return converted, old


def _hint_of_value(value: Any) -> Any:
    """Type of a free-form settings entry (an unregistered method's block): the type of its current value."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float if isinstance(value, float) else int
    if isinstance(value, str):
        return str
    return Any


def apply_overrides(plans: Plans, overrides: dict[str, Any], reason: str = "set by the user (--override)") -> Plans:
    """Return a copy of ``plans`` with dotted keys replaced, e.g. ``{"training.batch_size": 4}``.

    Keys, value types and bounds are checked (an unknown key raises SamdgError listing the valid keys); each change
    is appended to ``decisions``. ``decisions`` itself cannot be overridden.
    """
    result = copy.deepcopy(plans)
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "decisions":
            raise SamdgError("--override decisions: the decision log cannot be overridden")
        if parts[0] == "methods" and len(parts) >= 2:
            converted, old = _override_method_setting(result, parts, value, key)
        else:
            try:
                container, last, hint, metadata = _resolve(result, Plans, parts, key)
            except SamdgError as error:
                if "unknown key" in str(error) and len(parts) == 1:
                    raise SamdgError(f"--override {key}: unknown key; valid keys: "
                                     f"{', '.join(valid_override_keys(plans))}") from None
                raise
            converted = convert(value, hint, f"--override {key}")
            check_bounds(converted, metadata, f"--override {key}")
            old = _set(container, last, converted)
        if key in ("transpose_forward", "slice_axis"):
            _sync_transpose(result, key)
        result.decisions.append(Decision(key, to_plain(converted), f"{reason}; planner chose {to_plain(old)!r}"))
    result.validate("--override")
    return result


def _sync_transpose(plans: Plans, key: str) -> None:
    """Keep slice_axis / transpose_forward / transpose_backward consistent when the user sets one of them."""
    if key == "slice_axis":
        if plans.slice_axis not in (0, 1, 2):
            raise SamdgError(f"--override slice_axis: must be 0, 1 or 2, got {plans.slice_axis}")
        plans.transpose_forward = [plans.slice_axis] + [a for a in range(3) if a != plans.slice_axis]
    if sorted(plans.transpose_forward) == [0, 1, 2]:
        plans.slice_axis = plans.transpose_forward[0]
        plans.transpose_backward = [plans.transpose_forward.index(i) for i in range(3)]


# ---------------------------------------------------------------------------------------- documentation
def field_reference_markdown() -> str:
    """Markdown tables of every plans field (type, default, meaning), generated from the dataclasses."""
    sections = [markdown_table(cls, prefix, f"### `{cls.__name__}` ({cls.__doc__.strip()})")
                for cls, prefix in ((Plans, ""), (ChannelNormalization, "normalization.N."),
                                    (ChannelMapping, "channel_mapping."), (SamSettings, "sam."),
                                    (TrainingSettings, "training."), (Decision, "decisions.N."))]
    return "\n\n".join(sections) + "\n"
