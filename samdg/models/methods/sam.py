"""``sam``: the baseline every domain-generalisation method is compared with.

SAM (Kirillov et al., ICCV 2023) fine-tuned for automatic, prompt-free segmentation of K classes, as SAMed
(Zhang & Liu, arXiv 2304.13785) does for multi-organ CT:

- the image encoder is frozen (optionally with LoRA on the attention ``qkv`` projections, ``lora_rank > 0``);
- the prompt encoder is frozen and called with no prompt (empty sparse tokens, its learned "no mask" dense
  embedding), so prediction never needs a user prompt;
- SAM's mask decoder gets one mask token per class (see :mod:`samdg.models.methods.decoder`) and is fine-tuned;
  each class has its own sigmoid, trained with soft Dice + BCE (:mod:`samdg.models.methods.losses`).

Deviations from SAMed, on purpose: one sigmoid per class instead of a softmax over K+1 outputs (so nnU-Net
regions work and the label rule is :func:`samdg.labels.label_map_from_logits`); LoRA on the whole fused ``qkv``
matrix instead of its q and v parts (works for ViT and TinyViT alike); the IoU head is not trained (no prompt, so
nothing to score). Output: low-resolution logits (B,K,S/4,S/4), upsampled bilinearly by the loss and predictor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.methods.base import SegmentationMethod
from samdg.models.methods.decoder import automatic_prompt_embeddings, decode_all_masks, per_class_mask_decoder
from samdg.models.methods.lora import add_lora, lora_parameters
from samdg.models.methods.losses import dice_bce_loss
from samdg.models.methods.registry import register_method

SAM_DEFAULTS: dict[str, Any] = {
    "lora_rank": 0,
    "lora_alpha": None,
    "gradient_checkpointing": False,
    "lr": 1e-4,
    "weight_decay": 0.01,
    "warmup_fraction": 0.05,
    "poly_exponent": 0.9,
    "grad_clip": 12.0,
    "dice_weight": 1.0,
    "bce_weight": 1.0,
}


@register_method("sam", default_settings=SAM_DEFAULTS)
class SamBaseline(SegmentationMethod):
    def __init__(self, sam: nn.Module, settings: dict[str, Any], label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = per_class_mask_decoder(sam.mask_decoder, self.num_classes)
        self.image_encoder.requires_grad_(False)
        self.prompt_encoder.requires_grad_(False)
        self.lora_rank = int(settings.get("lora_rank") or 0)
        if self.lora_rank > 0:
            adapted = sum(add_lora(attention, self.lora_rank, settings.get("lora_alpha"))
                          for _, attention in self.image_encoder.attention_modules())
            if adapted == 0:
                raise ValueError("lora_rank > 0 but the encoder has no attention 'qkv' projection to adapt")
        if settings.get("gradient_checkpointing"):
            self.image_encoder.gradient_checkpointing = True

    def train(self, mode: bool = True) -> "SamBaseline":
        super().train(mode)
        # Frozen parts stay in inference mode (TinyViT's batch norms keep their statistics).
        self.image_encoder.eval()
        self.prompt_encoder.eval()
        return self

    def cacheable_features(self) -> tuple[str, ...] | None:
        return () if self.lora_rank == 0 else None

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.lora_rank == 0:
            with torch.no_grad():  # frozen: no activations kept for backward
                return {"embedding": self.image_encoder(images)}
        return {"embedding": self.image_encoder(images)}

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,4E,4E)."""
        sparse, dense, positional = automatic_prompt_embeddings(self.prompt_encoder)
        logits, _ = decode_all_masks(self.mask_decoder, features["embedding"], sparse, dense, positional)
        return logits

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"logits": self.decode(self.features(batch))}

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return dice_bce_loss(outputs["logits"], batch["target"], self.label_spec,
                             dice_weight=self.settings["dice_weight"], bce_weight=self.settings["bce_weight"])

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.decode(features if features is not None else self.encode(images))

    def trainable_parameters(self) -> list[nn.Parameter]:
        unused = {id(p) for p in self.mask_decoder.iou_prediction_head.parameters()}
        decoder = [p for p in self.mask_decoder.parameters() if id(p) not in unused]
        return decoder + lora_parameters(self.image_encoder)

