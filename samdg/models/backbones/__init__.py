"""SAM image-encoder variants (ViT-B/L/H, MedSAM, LiteMedSAM, tiny test variants) behind one backbone interface.

See documentation/backbones.md. Importing this package registers the variants.
"""

from samdg.models.backbones import variants  # noqa: F401  (registers the variants)
from samdg.models.backbones.base import Backbone
from samdg.models.backbones.kv_prompt import KeyValuePrompt, KVTokens
from samdg.models.backbones.registry import (
    DecoderSpec,
    TinyViTSpec,
    VariantConfig,
    ViTSpec,
    get_variant,
    list_variants,
    register_variant,
)
from samdg.models.backbones.sam import SamModel, build_backbone, build_sam

__all__ = [
    "Backbone",
    "DecoderSpec",
    "KVTokens",
    "KeyValuePrompt",
    "SamModel",
    "TinyViTSpec",
    "VariantConfig",
    "ViTSpec",
    "build_backbone",
    "build_sam",
    "get_variant",
    "list_variants",
    "register_variant",
]
