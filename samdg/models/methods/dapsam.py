"""``dapsam``: Prompting SAM with a Domain-Adaptive Prototype for single-source domain generalisation.

Paper: Wei et al., "Prompting Segment Anything Model with Domain-Adaptive Prototype for Generalizable Medical
Image Segmentation", MICCAI 2024, pp. 533-543 (arXiv 2409.12522); released code ``wkklavis/DAPSAM`` (read at
c7fd62e). Fully automatic: no point or box prompt, ever.

Reproduced:

- Encoder frozen except its adapters. The stem (patch embedding + position embedding) is projected once per
  pass (Linear C -> C) into the low-level features L, fed to every block: before the block the generalised
  adapter adds ``MLP(filter(0.5 x + L))`` (filter: parameter-free channel attention
  ``sigmoid(GMP + GAP)``; MLP C -> C/4 -> C, GELU), and beside the block's MLP the parallel adapter adds
  ``0.5 MLP'(filter(norm2(x) + L))`` (:mod:`samdg.models.layers.dapsam_encoder`).
- Prompt generator: prototype GAP + GMP of the image embedding, a 256-slot memory bank read by softmax
  attention into the domain-adaptive prototype, a cosine activation map and a 1x1 convolution of
  [embedding, prototype, map] giving the dense prompt, which replaces SAM's "no mask" embedding; the sparse
  prompt is empty (:mod:`samdg.models.layers.prototype_prompt`).
- SAM's stock mask decoder with K mask tokens for K classes, all outputs used, whole decoder trained.
- Loss 0.2 BCE + 0.8 soft Dice (smooth 1) per class; AdamW lr 5e-4, weight decay 0.1, linear warm-up then poly
  0.9; batch 8 and input 384 for ViT variants, recorded as the settings ``batch_size`` and
  ``input_size_by_family`` (documentation/methods/dapsam.md says how they reach the trainer).

Deliberate deviations (every fixed bug stays available as an option that defaults to the corrected behaviour):

- ``scrambled_low_level_embedding`` (default False): the released code projects the stem after reshaping the
  channels-last tensor to (B,C,H*W) without a permute, i.e. on scrambled token vectors. Fixed: per token.
- ``width_gated_filter`` (default False): the released pre-block filter receives a channels-first tensor but
  permutes it as if channels-last, so its gate varies along the image width. Fixed: one gate per channel.
- Decoder positional encoding: the released generator owns a fresh random Fourier matrix (SAM's is not loaded)
  on a hard-coded 24x24 / 32x32 grid. Here SAM's pretrained matrix is used at the embedding's actual size, so
  any input size works.
- Decoder initialisation: the released code re-initialises mask tokens, hypernetwork MLPs and IoU head; here
  class k starts from SAM's trained mask token k mod 4 (the shared ``per_class_mask_decoder``). The IoU head is
  not trained (no prompt, nothing to score; the released code trains it but never uses its output).
- Input intensities: the variant's own convention (SAM's mean/std on 0-255 for ViT-B) instead of the released
  per-image z-score with SAM's mean/std set to 0/1 (``intensity = "per_image_zscore"`` restores it).
- Dice per sample and class, averaged (DDP-consistent), instead of one Dice over the whole batch; class terms
  averaged instead of summed. Pixels with the ignore label count in neither term (the released prostate code
  fed its -1 border label to the BCE).
- Schedule: poly decay over the whole run, instead of a 200-epoch schedule stopped at epoch 160. Model
  selection by the trainer on held-out source-domain validation cases (``checkpoint_best``); the released code
  keeps the last epoch and has no validation split.
- Every backbone family is supported (LiteMedSAM's TinyViT too), with no per-family code: the adapters fill the
  block protocol's slots. Blocks at another width or grid than the stem (TinyViT's stages) get their own
  projection of the stem (area-averaged to their grid, Linear C0 -> width); conv blocks (TinyViT's stage 0) have
  no MLP and get the generalised adapter only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.models.backbones.intensity import INTENSITY_CONVENTIONS
from samdg.models.layers.dapsam_encoder import install_dapsam_adapters, upgrade_legacy_dapsam_keys
from samdg.models.layers.prototype_prompt import PrototypePromptGenerator
from samdg.models.methods.base import SegmentationMethod
from samdg.models.methods.decoder import decode_all_masks, per_class_mask_decoder
from samdg.models.methods.losses import dice_bce_loss
from samdg.models.methods.registry import register_method

DAPSAM_DEFAULTS: dict[str, Any] = {
    "adapter_ratio": 0.25,
    "memory_slots": 256,
    "scrambled_low_level_embedding": False,
    "width_gated_filter": False,
    # Intensity convention of the encoder input, "" = the variant's own (per_image_zscore = the released pipeline).
    "intensity": "",
    # Input side per backbone family, 0 = keep plans.sam.input_size (the reference trains ViT-B at 384).
    "input_size_by_family": {"vit": 384, "tinyvit": 0},
    # Global batch size, 0 = keep the plan's.
    "batch_size": 8,
    "gradient_checkpointing": False,
    "lr": 5e-4,
    "weight_decay": 0.1,
    "betas": [0.9, 0.999],
    "warmup_fraction": 0.005,  # 250 warm-up iterations of 200 epochs x 250 iterations
    "poly_exponent": 0.9,
    "grad_clip": 0.0,  # 0 = no clipping, as released
    "dice_weight": 0.8,
    "bce_weight": 0.2,
}


@register_method("dapsam", default_settings=DAPSAM_DEFAULTS)
class DAPSAM(SegmentationMethod):
    """SAM with DAPSAM's adapters and prototype prompt generator (see the module docstring).

    Trainable: the adapters and low-level projections, the prompt generator, the mask decoder (IoU head excepted).
    """

    def __init__(self, sam: nn.Module, settings: dict[str, Any], label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        config = sam.config
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder  # only its pretrained positional encoding is used
        self.mask_decoder = per_class_mask_decoder(sam.mask_decoder, self.num_classes)
        self.image_encoder.requires_grad_(False)
        self.prompt_encoder.requires_grad_(False)

        install_dapsam_adapters(self.image_encoder, float(self.settings["adapter_ratio"]),
                                width_gated=bool(self.settings["width_gated_filter"]),
                                scrambled=bool(self.settings["scrambled_low_level_embedding"]))
        self.register_load_state_dict_pre_hook(upgrade_legacy_dapsam_keys)  # checkpoints of the wrapper design
        intensity = self.settings["intensity"]
        if intensity:
            if intensity not in INTENSITY_CONVENTIONS:
                raise SamdgError(f"methods.dapsam.intensity: unknown convention '{intensity}'; use \"\" (the "
                                 f"variant's own) or one of {', '.join(sorted(INTENSITY_CONVENTIONS))}")
            self.image_encoder.intensity = intensity
        self.prompt_generator = PrototypePromptGenerator(config.embedding_dim, int(self.settings["memory_slots"]))
        if self.settings.get("gradient_checkpointing"):
            self.image_encoder.gradient_checkpointing = True

    def train(self, mode: bool = True) -> "DAPSAM":
        super().train(mode)
        # Frozen parts stay in inference mode (TinyViT's batch norms keep their statistics); the adapters have
        # neither dropout nor normalisation, so this does not change them.
        self.image_encoder.eval()
        self.prompt_encoder.eval()
        return self

    # --- encoder and decoder -------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,S,S) in [0,1] -> {"embedding": (B,256,E,E)} (adapters train, so never cached)."""
        return {"embedding": self.image_encoder(images)}

    def dense_positional_encoding(self, embedding: torch.Tensor) -> torch.Tensor:
        """SAM's pretrained Fourier positional encoding on the embedding's grid: (1,256,E,E)."""
        return self.prompt_encoder.pe_layer(tuple(embedding.shape[-2:])).unsqueeze(0)

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,4E,4E), prompted only by the prototype dense prompt."""
        embedding = features["embedding"]
        dense = self.prompt_generator(embedding)  # (B,256,E,E)
        sparse = embedding.new_zeros((1, 0, embedding.shape[1]))  # no point or box; broadcasts over the batch
        positional = self.dense_positional_encoding(embedding).to(embedding.dtype)
        logits, _ = decode_all_masks(self.mask_decoder, embedding, sparse, dense, positional)
        return logits

    # --- the method contract -------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"logits": self.decode(self.features(batch))}

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return dice_bce_loss(outputs["logits"], batch["target"], self.label_spec,
                             dice_weight=float(self.settings["dice_weight"]),
                             bce_weight=float(self.settings["bce_weight"]))

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.decode(features if features is not None else self.encode(images))

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The encoder's trainable part: what fills its slots and hooks (stem projections, every adapter)."""
        return [p for _, module in self.image_encoder.extensions() for p in module.parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        unused = {id(p) for p in self.mask_decoder.iou_prediction_head.parameters()}
        decoder = [p for p in self.mask_decoder.parameters() if id(p) not in unused]
        return self.adapter_parameters() + list(self.prompt_generator.parameters()) + decoder
