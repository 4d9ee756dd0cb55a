"""What the planner needs from the backbone registry: input size, intensity convention, checkpoint file name and
training memory per sample, read from each variant's :class:`~samdg.models.backbones.registry.VariantConfig` (the
one table of variants: a variant registered there is plannable without touching this file).
"""

from __future__ import annotations

from dataclasses import dataclass

from samdg.models.backbones import get_variant, list_variants


@dataclass(frozen=True)
class VariantInfo:
    name: str
    family: str  # 'vit' | 'tinyvit' | any registered family
    input_size: int
    intensity: str
    checkpoint_filename: str | None
    train_gib_per_sample: float | None  # GiB of GPU memory per training sample; None: the variant has no estimate


DEFAULT_VARIANT = "litemedsam"
# When several ViT checkpoints are in the weights folder: medical weights first, then the smallest.
VIT_PREFERENCE = ("medsam_vit_b", "vit_b", "vit_l", "vit_h")


def registry_variants() -> dict[str, VariantInfo]:
    """Every registered variant, by name."""
    variants = {}
    for name in list_variants():
        config = get_variant(name)
        variants[name] = VariantInfo(config.name, config.family, config.input_size, config.intensity,
                                     config.checkpoint, config.train_gib_per_sample)
    return variants
