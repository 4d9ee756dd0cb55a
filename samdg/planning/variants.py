"""What the planner needs from the backbone registry: input size, intensity convention, checkpoint file name,
and an estimate of training memory per sample.

The registry (``samdg.models.backbones``) is imported lazily; if it cannot be imported the small built-in table
below stands in, so planning works on a machine without the model code's dependencies.

Memory estimates (GiB per training sample, mixed precision, gradients flowing through the image encoder as the DG
methods' adapters and prompts require) are rough figures for sizing batches, not measurements of samdg:
LiteMedSAM at 256 px ~1.5; ViT-B at 1024 px ~9 (MedSAM fine-tuned ViT-B with 8 samples per 80 GB GPU); ViT-L ~16;
ViT-H ~24. Unknown variants are scaled from their family by input area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VariantInfo:
    name: str
    family: str  # 'vit' | 'tinyvit'
    input_size: int
    intensity: str
    checkpoint_filename: str | None


_BUILTIN = {
    "litemedsam": VariantInfo("litemedsam", "tinyvit", 256, "unit_range", "lite_medsam.pth"),
    "medsam_vit_b": VariantInfo("medsam_vit_b", "vit", 1024, "unit_range", "medsam_vit_b.pth"),
    "vit_b": VariantInfo("vit_b", "vit", 1024, "sam_meanstd_255", "sam_vit_b_01ec64.pth"),
    "vit_l": VariantInfo("vit_l", "vit", 1024, "sam_meanstd_255", "sam_vit_l_0b3195.pth"),
    "vit_h": VariantInfo("vit_h", "vit", 1024, "sam_meanstd_255", "sam_vit_h_4b8939.pth"),
}
DEFAULT_VARIANT = "litemedsam"
# When several ViT checkpoints are in the weights folder: medical weights first, then the smallest.
VIT_PREFERENCE = ("medsam_vit_b", "vit_b", "vit_l", "vit_h")

GIB_PER_SAMPLE = {"litemedsam": 1.5, "medsam_vit_b": 9.0, "vit_b": 9.0, "vit_l": 16.0, "vit_h": 24.0}
_FAMILY_GIB = {"tinyvit": (1.5, 256), "vit": (9.0, 1024)}  # (GiB per sample, at input size)


def _from_config(config) -> VariantInfo:
    filename = None
    for attribute in ("checkpoint_filename", "checkpoint", "filename"):
        value = getattr(config, attribute, None)
        if isinstance(value, str) and value:
            filename = Path(value).name
            break
    return VariantInfo(config.name, getattr(config, "family", "vit"), int(config.input_size),
                       getattr(config, "intensity", "unit_range"), filename)


def registry_variants() -> tuple[dict[str, VariantInfo], str]:
    """All known variants and where the list came from ('registry' or 'built-in table')."""
    try:
        from samdg.models.backbones import get_variant, list_variants
    except ImportError:
        return dict(_BUILTIN), "built-in table (samdg.models.backbones not importable)"
    variants = {}
    for name in list_variants():
        variants[name] = _from_config(get_variant(name))
    return variants, "backbone registry"


def memory_per_sample_gib(variant: VariantInfo) -> float:
    if variant.name in GIB_PER_SAMPLE:
        return GIB_PER_SAMPLE[variant.name]
    base, size = _FAMILY_GIB.get(variant.family, _FAMILY_GIB["vit"])
    return max(0.05, base * (variant.input_size / size) ** 2)
