"""Per-class segmentation losses shared by the methods: soft Dice + BCE on sigmoid logits.

SAM's mask tokens are binary, so every class (or nnU-Net region) gets its own sigmoid channel and the loss is
the sum of a binary cross-entropy and a soft Dice per class. Both are means over samples, so the gradient of a
batch equals the mean of the per-sample gradients: a batch split across DDP ranks gives the same gradient as one
process on the whole batch (nnU-Net's batch Dice would not). Pixels with the ignore label count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdg.labels import LabelSpec, targets_from_label_map, valid_mask


def resize_logits(logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B,K,h,w) -> (B,K,H,W) bilinear (SAM's low-resolution masks are upsampled the same way)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    spec: LabelSpec,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    smooth: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Soft Dice + BCE, per sample and class, averaged.

    Args:
        logits: (B,K,h,w) per-class logits; resized to the target size when they differ.
        target: (B,H,W) int64 label map.
    Returns:
        total loss (scalar tensor) and ``{"dice_loss": float, "bce": float}`` (unweighted parts, for logging).
    """
    logits = resize_logits(logits, tuple(target.shape[-2:])).float()
    targets = targets_from_label_map(target, spec)  # (B,K,H,W)
    valid = valid_mask(target, spec).unsqueeze(1).float()  # (B,1,H,W)
    n_valid = valid.sum(dim=(2, 3)).clamp_min(1.0)  # (B,1)

    bce_map = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * valid
    bce = (bce_map.sum(dim=(2, 3)) / n_valid).mean()

    probabilities = torch.sigmoid(logits) * valid
    intersection = (probabilities * targets).sum(dim=(2, 3))
    denominator = probabilities.sum(dim=(2, 3)) + (targets * valid).sum(dim=(2, 3))
    dice = 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()

    total = dice_weight * dice + bce_weight * bce
    return total, {"dice_loss": float(dice.detach()), "bce": float(bce.detach())}
