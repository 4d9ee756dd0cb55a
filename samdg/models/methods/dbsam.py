"""``dbsam``: DB-SAM, the dual-branch adapted SAM (Qin et al., "DB-SAM: Delving into High Quality Universal
Medical Image Segmentation", MICCAI 2024), paper architecture, for automatic multi-class segmentation.

- ViT branch: SAM's image encoder frozen; after each stage a trainable channel attention block
  ``F + PW1x1(SE(DWConv3x3(LN(F))))`` (``channel_attention: block`` adds one after every block);
- conv branch: a light convolution stem on a low-resolution copy of the image (4E px: 256 for ViT-B at 1024);
- after each stage a bilateral cross-attention block: ViT tokens query the conv features and conv tokens query
  the ViT features, each by deformable attention (pure PyTorch) + residual, then LayerNorm + FFN + residual; the
  updated ViT tokens enter the next frozen stage, so the frozen blocks see fused tokens and the encoder output
  can never be cached (``cacheable_features() is None``);
- ViT-conv fusion before the neck: ``M = sigmoid(FC-GELU-FC(F_d) + FC-GELU-FC(F_s))``, ``M F_d + (1-M) F_s``;
- SAM's neck stays frozen (the paper's figure), the prompt encoder frozen, the mask decoder trained with one mask
  token per class (:func:`samdg.models.layers.sam_decoding.per_class_mask_decoder`).

``architecture: released`` builds the repository's configuration instead
(:mod:`samdg.models.layers.dbsam_released`: four-level image pyramid, two multi-source deformable blocks per
stage, softmax fusion over the sources, trainable neck).

The parts are installed in the backbone protocol's hooks and slots (:mod:`samdg.models.layers.dbsam_blocks`), so
every family (ViT, TinyViT, any registered one) works without per-family code. Deviations from the paper and the
released code are listed in ``documentation/methods/dbsam.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.layers.box_prompts import box_prompted_logits, boxes_from_label_map, jitter_boxes
from samdg.models.layers.dbsam_blocks import install_dbsam
from samdg.models.layers.dbsam_released import install_dbsam_released
from samdg.models.layers.sam_decoding import (
    box_prompts,
    decode_masks,
    no_prompt,
    per_class_mask_decoder,
    whole_image_boxes,
)
from samdg.models.methods.base import FrozenSamMethod, unique_parameters
from samdg.models.methods.registry import register_method
from samdg.models.methods.settings import SamMethodSettings
from samdg.utils.schema import doc_field as _doc


@dataclass
class DBSAMSettings(SamMethodSettings):
    """`dbsam`: automatic prompt, dual-branch sizes, memory; the released optimisation and DiceCE weights."""

    architecture: Literal["paper", "released"] = _doc(
        "`paper`: the paper's dual branch; `released`: the repository's four-level image pyramid with two "
        "multi-source deformable blocks per stage, softmax fusion and a trainable neck", default="paper")
    prompt: Literal["none", "whole_image_box", "box"] = _doc(
        "prompt of the per-class mask decoder: `whole_image_box` (the whole input frame, as DeSAM-B; measured "
        "better than `none` on the synthetic multi-domain data), `none` (the mask tokens alone, as `sam`) or `box` "
        "(the paper's: a ground-truth box per class, jittered 0-19 px at 256 px in training; prediction then needs "
        "boxes, automatic prediction uses whole-image boxes)",
        default="whole_image_box")
    channel_attention: Literal["stage", "block"] = _doc(
        "paper: channel attention blocks after every `stage` (the figure) or after every `block` (the abstract)",
        default="stage")
    conv_channels: int = _doc("paper: width of the conv branch's first convolution (doubling per stride-2 layer)",
                              default=64, minimum=1)
    head_dim: int = _doc("deformable attention head width (heads = stage width / head_dim, rounded to a divisor)",
                         default=64, minimum=1)
    points: int = _doc("deformable attention sampling points per head", default=4, minimum=1)
    ffn_ratio: float = _doc("paper: hidden width / stage width of the cross-attention FFNs", default=0.25,
                            exclusive_minimum=0)
    gradient_checkpointing: bool = _doc("recompute encoder blocks and cross-attention blocks in the backward pass "
                                        "(less memory, about one more encoder forward per step)", default=False)


@register_method("dbsam", settings=DBSAMSettings)
class DBSAM(FrozenSamMethod):
    """SAM with DB-SAM's conv branch, channel attention, bilateral cross-attention and fusion (module docstring).

    Trainable: everything installed in the encoder's hooks and slots (and, ``released``, the neck), and the mask
    decoder (IoU head excepted).
    """

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        s = self.settings
        self.mask_decoder = per_class_mask_decoder(sam.mask_decoder, self.num_classes)
        if s.architecture == "released":
            install_dbsam_released(self.image_encoder, s.head_dim, s.points, checkpointing=s.gradient_checkpointing)
        else:
            install_dbsam(self.image_encoder, s.conv_channels, s.head_dim, s.points, s.ffn_ratio,
                          s.channel_attention, checkpointing=s.gradient_checkpointing)
        self.image_encoder.gradient_checkpointing = s.gradient_checkpointing

    def branch_modules(self) -> list[nn.Module]:
        """What DB-SAM added to the encoder: conv branch, channel attention, cross-attention, fusion."""
        return [module for _, module in self.image_encoder.extensions()]

    def trainable_modules(self) -> list[nn.Module]:
        neck = [self.image_encoder.neck] if self.settings.architecture == "released" else []  # released: it trains
        return [*self.branch_modules(), *neck, *self.mask_decoder_parts(self.mask_decoder)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return unique_parameters(self.trainable_modules())

    def prompt_embeddings(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The automatic prompt, shared by the batch: sparse (1,T,256), dense (1,256,E,E)."""
        if self.settings.prompt == "whole_image_box":
            return box_prompts(self.prompt_encoder, whole_image_boxes(1, self.input_size, device))
        return no_prompt(self.prompt_encoder)

    def ddp_find_unused_parameters(self) -> bool:
        return self.settings.prompt == "box"  # the mask token of a class absent from a batch gets no gradient

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """``prompt: box``: each class present in an image decoded from its jittered ground-truth box (or
        ``batch["boxes"]`` (B,K,4), NaN = none); absent classes are empty. Otherwise the automatic prompt."""
        if self.settings.prompt != "box":
            return super().forward(batch)
        boxes = batch.get("boxes")
        if boxes is None:
            boxes = boxes_from_label_map(batch["target"], self.label_spec)
            if self.training:
                boxes = jitter_boxes(boxes, self.input_size)
        return {"logits": self.decode_with_boxes(self.features(batch), boxes)}

    def decode_with_boxes(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """Box-prompted: boxes (B,K,4) in input pixels, NaN rows = no box -> logits (B,K,4E,4E)."""
        return box_prompted_logits(self.mask_decoder, self.prompt_encoder, features["embedding"], boxes)

    def predict_with_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Prompted prediction: (B,3,S,S) in [0,1] and boxes (B,K,4) (NaN = class empty) -> logits (B,K,4E,4E)."""
        return self.decode_with_boxes(self.encode(images), boxes)

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,4E,4E) with the automatic prompt (``prompt: box``: every
        class prompted by the whole image)."""
        embedding = features["embedding"]
        if self.settings.prompt == "box":
            whole = whole_image_boxes(embedding.shape[0], self.input_size, embedding.device)
            return self.decode_with_boxes(features, whole[:, None].expand(-1, self.num_classes, -1))
        sparse, dense = self.prompt_embeddings(embedding.device)
        logits, _ = decode_masks(self.mask_decoder, embedding, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return logits
