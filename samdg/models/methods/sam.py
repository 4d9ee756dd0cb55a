"""``sam``: the baseline every domain-generalisation method is compared with.

SAM (Kirillov et al., ICCV 2023) fine-tuned for automatic, prompt-free segmentation of K classes, as SAMed
(Zhang & Liu, arXiv 2304.13785) does for multi-organ CT:

- the image encoder is frozen (optionally with LoRA on the attention ``qkv`` projections, ``lora_rank > 0``);
- the prompt encoder is frozen and called with no prompt (empty sparse tokens, its learned "no mask" dense
  embedding), so prediction never needs a user prompt;
- SAM's mask decoder gets one mask token per class
  (:func:`samdg.models.layers.sam_decoding.per_class_mask_decoder`) and is fine-tuned; each class has its own
  sigmoid, trained with soft Dice + BCE (:mod:`samdg.models.methods.losses`).

Deviations from SAMed, on purpose: one sigmoid per class instead of a softmax over K+1 outputs (so nnU-Net
regions work and the label rule is :func:`samdg.labels.label_map_from_logits`); LoRA on the whole fused ``qkv``
matrix instead of its q and v parts (works for ViT and TinyViT alike); the IoU head is not trained (no prompt, so
nothing to score). Output: low-resolution logits (B,K,S/4,S/4), upsampled bilinearly by the loss and predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.layers.box_prompts import box_prompted_logits
from samdg.models.layers.sam_decoding import decode_masks, no_prompt, per_class_mask_decoder
from samdg.models.methods.base import FrozenSamMethod
from samdg.models.methods.lora import add_lora, lora_parameters
from samdg.models.methods.registry import register_method
from samdg.models.methods.settings import SamMethodSettings
from samdg.utils.schema import doc_field as _doc


@dataclass
class SamBaselineSettings(SamMethodSettings):
    """`sam`: LoRA on the encoder (optional), optimisation and loss weights."""

    lora_rank: int = _doc("LoRA rank on every encoder attention `qkv` projection (0 = frozen encoder)", default=0,
                          minimum=0)
    lora_alpha: float | None = _doc("LoRA scale numerator (null = the rank, i.e. scale 1)", default=None,
                                    exclusive_minimum=0)
    gradient_checkpointing: bool = _doc("recompute encoder blocks in the backward pass (with LoRA)", default=False)


@register_method("sam", settings=SamBaselineSettings)
class SamBaseline(FrozenSamMethod):
    """Frozen SAM encoders (+ optional LoRA), per-class mask decoder trained without its IoU head."""

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        self.mask_decoder = per_class_mask_decoder(sam.mask_decoder, self.num_classes)
        if self.settings.lora_rank > 0:
            adapted = sum(add_lora(attention, self.settings.lora_rank, self.settings.lora_alpha)
                          for _, attention in self.image_encoder.attention_modules())
            if adapted == 0:
                raise ValueError("lora_rank > 0 but the encoder has no attention 'qkv' projection to adapt")
        self.image_encoder.gradient_checkpointing = self.settings.gradient_checkpointing

    def trainable_modules(self) -> list[nn.Module]:
        return self.mask_decoder_parts(self.mask_decoder)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return super().trainable_parameters() + lora_parameters(self.image_encoder)

    def cacheable_features(self) -> tuple[str, ...] | None:
        return () if self.settings.lora_rank == 0 else None

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,4E,4E), with no prompt at all."""
        sparse, dense = no_prompt(self.prompt_encoder)
        logits, _ = decode_masks(self.mask_decoder, features["embedding"], self.prompt_encoder.get_dense_pe(),
                                 sparse, dense)
        return logits

    def predict_with_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Box-prompted (``samdg_predict --boxes``, ``samdg_benchmark --prompt gt-box``): (B,3,S,S) in [0,1] and
        boxes (B,K,4) in input pixels (NaN = class empty) -> (B,K,4E,4E), class k decoded from its box with mask
        token k (the automatic model's decoder, prompted as SAM was pretrained)."""
        embedding = self.encode(images)["embedding"]
        return box_prompted_logits(self.mask_decoder, self.prompt_encoder, embedding, boxes)
