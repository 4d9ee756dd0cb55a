"""SAM image-encoder variants (ViT-B/L/H, MedSAM, LiteMedSAM, MobileSAM, tiny test variants) behind one backbone
protocol.

See documentation/backbones.md. Importing this package registers the families (``vit``, ``tinyvit``) and the
variants.
"""

from samdg.models.backbones import tinyvit, variants, vit  # noqa: F401  (register the families and variants)
from samdg.models.backbones.base import Backbone, Stage
from samdg.models.backbones.blocks import Block, ConvBlock, TransformerBlock
from samdg.models.backbones.kv_prompt import KeyValuePrompt, KVTokens
from samdg.models.backbones.registry import (
    DecoderSpec,
    TinyViTSpec,
    VariantConfig,
    ViTSpec,
    get_family,
    get_variant,
    list_families,
    list_variants,
    register_family,
    register_variant,
)
from samdg.models.backbones.sam import SamModel, build_backbone, build_sam

__all__ = [
    "Backbone",
    "Block",
    "ConvBlock",
    "DecoderSpec",
    "KVTokens",
    "KeyValuePrompt",
    "SamModel",
    "Stage",
    "TinyViTSpec",
    "TransformerBlock",
    "VariantConfig",
    "ViTSpec",
    "build_backbone",
    "build_sam",
    "get_family",
    "get_variant",
    "list_families",
    "list_variants",
    "register_family",
    "register_variant",
]
