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

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.layers.dapsam_encoder import install_dapsam_adapters, upgrade_legacy_dapsam_keys
from samdg.models.layers.prototype_prompt import PrototypePromptGenerator
from samdg.models.layers.sam_decoding import decode_masks, per_class_mask_decoder
from samdg.models.methods.base import FrozenSamMethod, unique_parameters
from samdg.models.methods.registry import register_method
from samdg.models.methods.settings import SamMethodSettings, redefault
from samdg.utils.schema import doc_field as _doc

# "" = the variant's own convention; the others are samdg.models.backbones.intensity.INTENSITY_CONVENTIONS.
IntensityChoice = Literal["", "sam_meanstd_255", "unit_range", "per_image_zscore"]


@dataclass
class DAPSAMSettings(SamMethodSettings):
    """`dapsam`: adapters, prototype prompt, released-bug options; released optimisation and loss weights."""

    adapter_ratio: float = _doc("adapter bottleneck width / block width (0.25: 768 -> 192)", default=0.25,
                                exclusive_minimum=0)
    memory_slots: int = _doc("slots of the prototype memory bank", default=256, minimum=1)
    scrambled_low_level_embedding: bool = _doc("released bug: project the stem on scrambled token vectors",
                                               default=False)
    width_gated_filter: bool = _doc("released bug: the pre-block filter gates image columns, not channels",
                                    default=False)
    intensity: IntensityChoice = _doc("encoder input convention; \"\" = the variant's own, `per_image_zscore` = the "
                                      "released pipeline", default="")
    gradient_checkpointing: bool = _doc("recompute encoder blocks in the backward pass", default=False)
    # The released recipe: ViT-B at 384 px, batch 8, AdamW 5e-4 / 0.1, 250 warm-up iterations of 200 x 250, no
    # clipping, 0.8 Dice + 0.2 BCE.
    input_size_by_family: dict[str, int] = redefault(SamMethodSettings, "input_size_by_family",
                                                     {"vit": 384, "tinyvit": 0})
    batch_size: int = redefault(SamMethodSettings, "batch_size", 8)
    lr: float = redefault(SamMethodSettings, "lr", 5e-4)
    weight_decay: float = redefault(SamMethodSettings, "weight_decay", 0.1)
    warmup_fraction: float = redefault(SamMethodSettings, "warmup_fraction", 0.005)
    grad_clip: float | None = redefault(SamMethodSettings, "grad_clip", 0.0)
    dice_weight: float = redefault(SamMethodSettings, "dice_weight", 0.8)
    bce_weight: float = redefault(SamMethodSettings, "bce_weight", 0.2)


@register_method("dapsam", settings=DAPSAMSettings)
class DAPSAM(FrozenSamMethod):
    """SAM with DAPSAM's adapters and prototype prompt generator (see the module docstring).

    Trainable: the adapters and low-level projections, the prompt generator, the mask decoder (IoU head excepted).
    """

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)  # the prompt encoder: only its positional encoding is used
        config = sam.config
        self.mask_decoder = per_class_mask_decoder(sam.mask_decoder, self.num_classes)

        install_dapsam_adapters(self.image_encoder, self.settings.adapter_ratio,
                                width_gated=self.settings.width_gated_filter,
                                scrambled=self.settings.scrambled_low_level_embedding)
        self.register_load_state_dict_pre_hook(upgrade_legacy_dapsam_keys)  # checkpoints of the wrapper design
        if self.settings.intensity:
            self.image_encoder.intensity = self.settings.intensity
        self.prompt_generator = PrototypePromptGenerator(config.embedding_dim, self.settings.memory_slots)
        self.image_encoder.gradient_checkpointing = self.settings.gradient_checkpointing

    # --- encoder (adapters train, so its features are never cached) and decoder ----------------------------------

    def dense_positional_encoding(self, embedding: torch.Tensor) -> torch.Tensor:
        """SAM's pretrained Fourier positional encoding on the embedding's grid: (1,256,E,E)."""
        return self.prompt_encoder.pe_layer(tuple(embedding.shape[-2:])).unsqueeze(0)

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,4E,4E), prompted only by the prototype dense prompt."""
        embedding = features["embedding"]
        dense = self.prompt_generator(embedding)  # (B,256,E,E)
        sparse = embedding.new_zeros((1, 0, embedding.shape[1]))  # no point or box; broadcasts over the batch
        positional = self.dense_positional_encoding(embedding).to(embedding.dtype)
        logits, _ = decode_masks(self.mask_decoder, embedding, positional, sparse, dense)
        return logits

    # --- what trains ---------------------------------------------------------------------------------------------

    def adapter_modules(self) -> list[nn.Module]:
        """The encoder's trainable part: what fills its slots and hooks (stem projections, every adapter)."""
        return [module for _, module in self.image_encoder.extensions()]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return unique_parameters(self.adapter_modules())

    def trainable_modules(self) -> list[nn.Module]:
        """Adapters (inside the frozen encoder), prompt generator, mask decoder without its IoU head."""
        return [*self.adapter_modules(), self.prompt_generator, *self.mask_decoder_parts(self.mask_decoder)]
