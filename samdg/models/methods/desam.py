"""``desam``: Decoupled Segment Anything Model (DeSAM).

Paper: Y. Gao, W. Xia, D. Hu, W. Wang, X. Gao, "DeSAM: Decoupled Segment Anything Model for Generalizable Medical
Image Segmentation", MICCAI 2024, pp. 509-519 (arXiv 2306.00499). Released code: github.com/yifangao112/DeSAM
(read at f377da2). Method page: documentation/methods/desam.md.

Reproduced:

- Encoder and prompt encoder frozen (their outputs are cacheable: embedding + three intermediate taps).
- PRIM (prompt-relevant IoU module): SAM's own two-way transformer and IoU head, run on the prompt with the stock
  modules (:func:`samdg.models.layers.sam_decoding.run_two_way_transformer`, the same token assembly as
  ``MaskDecoder.predict_masks``). Outputs: the updated image tokens, i.e. the "mask embedding" (B,256,E,E), and
  a prompt-relevance score = column 0 of the IoU head.
- PDMM (prompt-decoupled mask module): a UNETR-style convolutional decoder with residual SE blocks over the three
  taps (deepest first, widths 256/128/64), the mask embedding concatenated at the coarsest level, 1x1 head, logits
  (B,K,4E,4E) (256x256 for E=64). Same blocks and widths as the released ``PIMMDecoder``.
  The SE gate of each residual block sits after an InstanceNorm without affine parameters, as released: the
  normalised map has zero mean per channel, so the gate's global-average-pooled input is ~0, its bias-free FC
  layers output ~0 and the gate is sigmoid(0) = 0.5 for every channel and image; the FC weights get (numerically)
  zero gradients. A dead gate, reproduced as released (it halves the residual branch); it still receives
  gradients that are not None, which is all DDP needs.
- Training prompts ("DeSAM-P", ``prompt: point``): one random point per image, on the background with
  probability 1/2, always encoded as a *positive* point (label 1) as the released code does; score target 1 if
  the point lies on the object, 0 otherwise; mask target always the full mask. ``prompt: box`` is DeSAM-B (the
  whole-image box, no score loss). Losses: Dice + BCE on the mask (shared :func:`dice_bce_loss`), L1 on the score.
- Automatic inference: a 9x9 point grid (each point positive), points kept when their score exceeds 0.5, the
  best-scoring kept point decides the mask; no point kept = empty prediction. Or the whole-image box.
- Optimiser defaults of the released scripts: Adam lr 1e-4 without weight decay, poly(0.9) decay, batch 8,
  50 epochs.

K classes (the released code is binary): PDMM has K output channels, one sigmoid each; the prompt is class-agnostic
("on the object" = on any foreground class, points drawn uniformly from the union of the classes) and the score
says whether the point lies on any foreground class. The mask target is the full K-class mask whatever the prompt.

Deliberate deviations from the released code (bug fixes are options defaulting to the corrected behaviour):

- ``train_on_empty_slices`` (default true): the released pipeline trains (and evaluates) only on slices with
  foreground, so the model never learns to output nothing. false drops images without foreground from the loss.
- ``train_unused_decoder_parts`` (default false): the released optimiser holds all of ``mask_decoder``, including
  SAM's output upscaling and hypernetwork MLPs that DeSAM never calls (~0.6 M parameters that receive no gradient);
  here they are frozen. The released PDMM also carries unused parameters (a 1x1 shortcut in residual blocks that
  keep their width, a deep-supervision head); they are not built here.
- Whole-box inference runs one decoder pass per image, not the released 81 identical ones (same result).
- Grid inference decodes the mask of the best-scoring kept point only (``grid_merge: top``). The released loop
  decodes all 81, applies box NMS (0.7) and a small-region clean-up, and keeps the first mask of the list: NMS
  never removes the best-scoring mask, so it cannot change that choice and is skipped. The small-region clean-up
  (holes and islands under 1000 px at 256x256, which can delete small organs) is not reproduced.
  ``grid_merge: mean`` averages the logits of the kept points after mask-IoU NMS (``dedup_iou``).
- Not copied (evaluation hacks): zeroing a 50-pixel border of every prediction, evaluating only slices with
  foreground. The released Dice is MONAI's squared-denominator Dice with CE; here samdg's shared soft Dice + BCE.
- Any backbone: taps, their channels and resolutions are read from the backbone (the released ViT-B build fails
  because the tap width 1280 of ViT-H is hard-coded). Training points are drawn at the input resolution, not on the
  4-pixel lattice of the released 256x256 sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from samdg.errors import SamdgError
from samdg.labels import LabelSpec, targets_from_label_map, valid_mask
from samdg.models.layers.conv_decoder import TapPyramidDecoder
from samdg.models.layers.point_prompts import mask_nms, point_grid, sample_points
from samdg.models.layers.sam_decoding import (
    box_prompts,
    point_prompts,
    run_two_way_transformer,
    sam_output_tokens,
    whole_image_boxes,
)
from samdg.models.methods.base import FrozenSamMethod
from samdg.models.methods.losses import dice_bce_loss
from samdg.models.methods.registry import register_method
from samdg.models.methods.settings import SamMethodSettings, redefault
from samdg.utils.schema import doc_field as _doc

# Logit written where grid inference finds no relevant prompt: sigmoid(-20) ~ 2e-9, finite so that bilinear
# resizing stays well defined.
EMPTY_LOGIT = -20.0


@dataclass
class DeSAMSettings(SamMethodSettings):
    """`desam`: prompts, automatic inference, PDMM architecture, released-bug options; the released optimisation."""

    prompt: Literal["point", "box"] = _doc("training prompt: `point` (DeSAM-P, one random point) or `box` (DeSAM-B, "
                                           "the whole-image box)", default="point")
    background_point_probability: float = _doc("probability that a training point lies on the background",
                                               default=0.5, minimum=0, maximum=1)
    score_loss: Literal["l1", "mse"] = _doc("score loss: `l1` (released default) or `mse` (released --mse)",
                                            default="l1")
    score_loss_weight: float = _doc("weight of the score loss", default=1.0, minimum=0)
    inference: Literal["auto", "grid", "box"] = _doc("automatic inference: `grid` of points, whole `box`, or `auto` "
                                                     "(grid for a point-trained model, box for a box-trained one)",
                                                     default="auto")
    grid_points_per_side: int = _doc("points per side of the inference grid", default=9, minimum=1)
    score_threshold: float = _doc("grid points with a score above this are kept", default=0.5)
    grid_merge: Literal["top", "mean"] = _doc("`top` (released: the best-scoring kept point decides) or `mean` (mean "
                                              "logits of the kept points after mask NMS)", default="top")
    dedup_iou: float = _doc("mask-IoU threshold of the NMS of `grid_merge: mean`", default=0.7, minimum=0, maximum=1)
    prompts_per_pass: int = _doc("(image, grid point) pairs per PRIM pass (memory vs speed)", default=64, minimum=1)
    taps: list[str] | None = _doc("encoder taps feeding PDMM, shallow to deep; null = the backbone's `default_taps` "
                                  "(ViT-B: blocks 2, 5, 8)", default=None)
    decoder_widths: list[int] = _doc("PDMM width per level, deepest first (one per tap)",
                                     default_factory=lambda: [256, 128, 64], minimum=1)
    se_reduction: int = _doc("channel reduction of the SE gates", default=16, minimum=1)
    train_on_empty_slices: bool = _doc("false = the released pipeline: images without foreground get no loss",
                                       default=True)
    train_unused_decoder_parts: bool = _doc("true = the released optimiser: also SAM's upscaling and hypernetworks, "
                                            "which get no gradient (DDP then searches for unused parameters)",
                                            default=False)
    # The released scripts: Adam 1e-4 without weight decay, poly 0.9, no warm-up or clipping, batch 8, 50 epochs.
    weight_decay: float = redefault(SamMethodSettings, "weight_decay", 0.0)
    warmup_fraction: float = redefault(SamMethodSettings, "warmup_fraction", 0.0)
    grad_clip: float | None = redefault(SamMethodSettings, "grad_clip", None)
    batch_size: int = redefault(SamMethodSettings, "batch_size", 8)
    num_epochs: int = redefault(SamMethodSettings, "num_epochs", 50)


@register_method("desam", settings=DeSAMSettings)
class DeSAM(FrozenSamMethod):
    """PRIM (SAM's transformer + IoU head on one prompt) + PDMM (conv decoder over three encoder taps).

    ``forward(batch)`` samples the training prompts (or takes ``batch["points"]`` (B,2) when given) and returns
    ``logits`` (B,K,4E,4E), ``score`` (B,), ``score_target`` (B,) float and, with point prompts, ``points`` (B,2)
    (x, y) in input pixels; ``predict(images)`` is the automatic mode (grid of points or whole box).
    """

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        self.mask_decoder = sam.mask_decoder  # PRIM uses its transformer, tokens and IoU head
        self.tap_names = tuple(self.settings.taps or self.image_encoder.default_taps)
        if len(self.tap_names) != len(self.settings.decoder_widths):
            raise SamdgError(
                f"desam needs one decoder width per tap: taps {list(self.tap_names)} vs decoder_widths "
                f"{self.settings.decoder_widths}"
            )
        channels, sizes = _tap_geometry(self.image_encoder, self.tap_names)
        embedding_size = int(sam.config.embedding_size)
        deepest_first = list(reversed(range(len(self.tap_names))))
        scales = [_level_scale(embedding_size, sizes[t], level, self.tap_names[t])
                  for level, t in enumerate(deepest_first)]
        self.pdmm = TapPyramidDecoder(
            tap_channels=[channels[t] for t in deepest_first],
            widths=list(self.settings.decoder_widths),
            out_channels=self.num_classes,
            tap_scales=scales,
            guide_channels=self.mask_decoder.transformer_dim,
            se_reduction=self.settings.se_reduction,
        )

    # --- the contract ---------------------------------------------------------------------------------------

    def cacheable_features(self) -> tuple[str, ...]:
        return self.tap_names

    def ddp_find_unused_parameters(self) -> bool:
        # SAM's upscaling and hypernetworks get no gradient: DDP must be told when they sit in the optimiser.
        return self.settings.train_unused_decoder_parts

    def trainable_modules(self) -> list[nn.Module]:
        """PRIM (transformer, IoU/mask tokens, IoU head) + PDMM: every module whose parameters get a gradient.

        With ``prompt: box`` the IoU head and the transformer's last token-to-image attention (whose only output
        is the IoU token) get no loss and stay frozen, so DDP finds no unused parameter.
        """
        decoder, transformer = self.mask_decoder, self.mask_decoder.transformer
        token_only = [transformer.final_attn_token_to_image, transformer.norm_final_attn]  # feed only the IoU token
        prim: list[nn.Module] = [*transformer.layers, decoder.iou_token, decoder.mask_tokens]
        if self.settings.prompt == "point":  # DeSAM-B gives the score no loss
            prim += [*token_only, decoder.iou_prediction_head]
        if self.settings.train_unused_decoder_parts:
            prim += [decoder.output_upscaling, decoder.output_hypernetworks_mlps]
        return prim + [self.pdmm]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = self.in_decoder_dtype(self.features(batch))
        target = batch["target"]
        if self.settings.prompt == "point":
            foreground = targets_from_label_map(target, self.label_spec).amax(dim=1) > 0  # (B,S,S)
            if batch.get("points") is not None:  # fixed prompts (B,2), e.g. for a reproducible evaluation
                coords = batch["points"].to(target.device, torch.float32)
                x, y = coords[:, 0].long(), coords[:, 1].long()
                on_foreground = foreground[torch.arange(len(coords), device=target.device), y, x]
            else:
                valid = valid_mask(target, self.label_spec)
                coords, on_foreground = sample_points(foreground, valid, self.settings.background_point_probability)
            sparse, dense = point_prompts(self.prompt_encoder, coords)  # always positive, as released
            score_target = on_foreground.float()
        else:
            boxes = whole_image_boxes(target.shape[0], self.input_size, target.device)
            sparse, dense = box_prompts(self.prompt_encoder, boxes)
            score_target = torch.ones(target.shape[0], device=target.device)
        mask_embedding, score = self.prim(features["embedding"], sparse, dense)
        logits = self.pdmm(self._taps_deepest_first(features), guide=mask_embedding)
        outputs = {"logits": logits, "score": score, "score_target": score_target}
        if self.settings.prompt == "point":
            outputs["points"] = coords
        return outputs

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits, target = outputs["logits"], batch["target"]
        keep = None
        if not self.settings.train_on_empty_slices:  # released behaviour: slices without foreground unseen
            keep = targets_from_label_map(target, self.label_spec).flatten(1).amax(dim=1) > 0
            if not keep.any():
                zero = logits.sum() * 0.0 + outputs["score"].sum() * 0.0
                return zero, {"dice_loss": 0.0, "bce": 0.0, "score": 0.0}
            logits, target = logits[keep], target[keep]
        total, parts = dice_bce_loss(logits, target, self.label_spec,
                                     dice_weight=self.settings.dice_weight, bce_weight=self.settings.bce_weight)
        if self.settings.prompt == "point":
            score, score_target = outputs["score"].float(), outputs["score_target"]
            if keep is not None:
                score, score_target = score[keep], score_target[keep]
            if self.settings.score_loss == "l1":
                score_loss = F.l1_loss(score, score_target)
            else:
                score_loss = F.mse_loss(score, score_target)
            total = total + self.settings.score_loss_weight * score_loss
            parts["score"] = float(score_loss.detach())
        return total, parts

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Automatic mode: (B,3,S,S) in [0,1] -> per-class logits (B,K,4E,4E)."""
        features = self.in_decoder_dtype(features if features is not None else self.encode(images))
        if self.inference_mode == "box":
            return self.predict_whole_box(features)
        return self.predict_grid(features)

    # --- PRIM and prompts -----------------------------------------------------------------------------------

    @property
    def inference_mode(self) -> str:
        mode = self.settings.inference
        if mode == "auto":
            return "grid" if self.settings.prompt == "point" else "box"
        return mode

    def prim(self, embedding: torch.Tensor, sparse: torch.Tensor,
             dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-relevant IoU module.

        Args:
            embedding: (N or 1,256,E,E); sparse: (N,T,256) prompt tokens; dense: (N or 1,256,E,E).
        Returns:
            mask embedding (N,256,E,E) (the transformer's updated image tokens) and score (N,) (IoU head, column 0).
        """
        positional = self.prompt_encoder.get_dense_pe()
        tokens, mask_embedding = run_two_way_transformer(self.mask_decoder, embedding, positional,
                                                         sam_output_tokens(self.mask_decoder), sparse, dense)
        score = self.mask_decoder.iou_prediction_head(tokens[:, 0, :])[:, 0]
        return mask_embedding, score

    # --- automatic inference --------------------------------------------------------------------------------

    def predict_whole_box(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """DeSAM-B: one whole-image-box pass per image -> (B,K,4E,4E)."""
        embedding = features["embedding"]
        boxes = whole_image_boxes(embedding.shape[0], self.input_size, embedding.device)
        sparse, dense = box_prompts(self.prompt_encoder, boxes)
        mask_embedding, _ = self.prim(embedding, sparse, dense)
        return self.pdmm(self._taps_deepest_first(features), guide=mask_embedding)

    def grid_scores(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score every (image, grid point) pair, ``prompts_per_pass`` pairs per PRIM pass.

        Args:
            embedding: (B,256,E,E).
        Returns:
            scores (B,P), and the grid's prompt embeddings: sparse (P,2,256), dense (1,256,E,E).
        """
        grid = point_grid(self.settings.grid_points_per_side, self.input_size).to(embedding.device)
        sparse, dense = point_prompts(self.prompt_encoder, grid)
        b, p = embedding.shape[0], grid.shape[0]
        chunk = self.settings.prompts_per_pass
        scores = []
        for start in range(0, b * p, chunk):
            pairs = torch.arange(start, min(start + chunk, b * p), device=embedding.device)
            scores.append(self.prim(embedding[pairs // p], sparse[pairs % p], dense)[1])
        return torch.cat(scores).view(b, p), sparse, dense

    def predict_grid(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """DeSAM-P: score every grid point, keep those above ``score_threshold``, decode -> (B,K,4E,4E).

        ``grid_merge: top`` decodes the best-scoring kept point of each image (one PDMM pass per image; the mask
        embeddings of the other points are never kept); ``mean`` averages the logits of the kept points that
        survive mask-IoU NMS. An image without a kept point gets EMPTY_LOGIT everywhere.
        """
        embedding = features["embedding"]
        taps = self._taps_deepest_first(features)
        scores, sparse, dense = self.grid_scores(embedding)
        kept = scores > self.settings.score_threshold  # (B,P)
        images = torch.nonzero(kept.any(dim=1)).squeeze(1)
        size = embedding.shape[-1] * 2 ** (len(self.pdmm.branches) - 1)
        logits = torch.full((embedding.shape[0], self.num_classes, size, size), EMPTY_LOGIT, device=embedding.device)
        if images.numel() == 0:
            return logits
        if self.settings.grid_merge == "top":
            best = scores.masked_fill(~kept, -math.inf).argmax(dim=1)[images]  # (n,)
            mask_embedding, _ = self.prim(embedding[images], sparse[best], dense)
            decoded = self.pdmm([tap[images] for tap in taps], guide=mask_embedding)
            return logits.to(decoded.dtype).index_copy(0, images, decoded)
        chunk = self.settings.prompts_per_pass
        for b in images.tolist():
            points = torch.nonzero(kept[b]).squeeze(1)
            levels = self.pdmm.branch_outputs([tap[b : b + 1] for tap in taps])  # prompt-independent: once
            decoded = torch.cat([
                self.pdmm.decode(levels, self.prim(embedding[b : b + 1], sparse[points[i : i + chunk]], dense)[0])
                for i in range(0, points.numel(), chunk)
            ])
            survivors = mask_nms(decoded.amax(dim=1) > 0, scores[b, points], self.settings.dedup_iou)
            logits[b] = decoded[survivors].float().mean(dim=0)
        return logits

    def predict_with_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Box-prompted (``samdg_predict --boxes``, ``samdg_benchmark --prompt gt-box``): (B,3,S,S) in [0,1] and
        boxes (B,K,4) in input pixels (NaN = class empty) -> (B,K,4E,4E). PRIM is prompted by class k's box and
        PDMM's channel k is kept (DeSAM's prompt is class-agnostic): one PRIM + PDMM pass per (image, box)."""
        features = self.in_decoder_dtype(self.encode(images))
        embedding, taps = features["embedding"], self._taps_deepest_first(features)
        size = 4 * embedding.shape[-1]
        logits = embedding.new_full((*boxes.shape[:2], size, size), EMPTY_LOGIT)
        image_index, class_index = torch.nonzero(~boxes.isnan().any(dim=-1), as_tuple=True)
        if len(image_index) == 0:
            return logits
        sparse, dense = box_prompts(self.prompt_encoder, boxes[image_index, class_index].to(embedding.dtype))
        mask_embedding, _ = self.prim(embedding[image_index], sparse, dense)
        prompted = self.pdmm([tap[image_index] for tap in taps], guide=mask_embedding)  # (P,K,4E,4E)
        rows = torch.arange(len(class_index), device=prompted.device)
        return logits.index_put((image_index, class_index), prompted[rows, class_index].to(logits.dtype))

    # --- helpers --------------------------------------------------------------------------------------------

    def _taps_deepest_first(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        missing = [name for name in self.tap_names if name not in features]
        if missing:
            raise KeyError(f"desam needs encoder taps {list(self.tap_names)}; the features lack {missing}")
        return [features[name] for name in reversed(self.tap_names)]


def _level_scale(embedding_size: int, tap_size: int, level: int, name: str) -> int:
    """log2(resolution of decoder level ``level`` / tap resolution); level d runs at E * 2^d."""
    ratio = embedding_size * 2**level / tap_size
    scale = round(math.log2(ratio))
    if ratio <= 0 or 2.0**scale != ratio:
        raise SamdgError(
            f"desam tap '{name}' has resolution {tap_size}, which is not a power-of-two step from decoder level "
            f"{level} ({embedding_size * 2 ** level}); choose other taps"
        )
    return scale


def _tap_geometry(encoder: nn.Module, tap_names: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Channels and spatial size of each tap (from ``Backbone.feature_shapes``, no forward pass)."""
    shapes = encoder.feature_shapes()
    unknown = [name for name in tap_names if name not in shapes]
    if unknown:
        raise SamdgError(f"desam setting 'taps': unknown encoder taps {unknown}; this backbone offers {list(shapes)}")
    return [int(shapes[name][0]) for name in tap_names], [int(shapes[name][-1]) for name in tap_names]
