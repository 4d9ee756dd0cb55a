"""Validation during and after training, with the same label rule as prediction.

- Per epoch, **slice level** ("pseudo Dice", as nnU-Net): a fixed set of validation batches (the same slices
  every epoch) is predicted in automatic mode; true/false positives and false negatives of every class are summed
  over all slices (and all processes) and Dice = 2TP / (2TP + FP + FN). Logits are upsampled to the input size and
  turned into a label map by :func:`samdg.labels.label_map_from_logits`, then compared per class (for regions:
  per region) with the target, ignore-label pixels excluded.
- After training, **whole volumes**: every slice of every validation case is predicted with the predictor's own
  slice code (no test-time mirroring), restored to the slice grid and stacked; Dice per case and class is computed
  in the preprocessed space (the exported-geometry evaluation is ``samdg_evaluate``'s job).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from samdg.evaluation.metrics import dice_from_counts
from samdg.labels import (
    LabelSpec,
    label_map_from_logits,
    label_map_from_probabilities,
    targets_from_label_map,
    valid_mask,
)
from samdg.models.methods.losses import resize_logits


def class_confusion(label_map: torch.Tensor, target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,H,W) predicted and reference label maps -> (K,3) int64 [TP, FP, FN] per class, ignore label excluded."""
    valid = valid_mask(target, spec).unsqueeze(1)
    predicted = targets_from_label_map(label_map, spec).bool() & valid
    reference = targets_from_label_map(target, spec).bool() & valid
    tp = (predicted & reference).sum(dim=(0, 2, 3))
    fp = (predicted & ~reference).sum(dim=(0, 2, 3))
    fn = (~predicted & reference).sum(dim=(0, 2, 3))
    return torch.stack([tp, fp, fn], dim=1).long()


def slice_confusion(logits: torch.Tensor, target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,K,h,w) logits and (B,S,S) target -> (K,3) [TP, FP, FN] at the target's resolution."""
    label_map = label_map_from_logits(resize_logits(logits.float(), tuple(target.shape[-2:])), spec)
    return class_confusion(label_map, target, spec)


def dice_per_class(confusion: torch.Tensor, spec: LabelSpec) -> dict[str, float]:
    """(K,3) summed counts -> {class name: Dice} (NaN for a class absent from reference and prediction)."""
    return {name: dice_from_counts(*(int(v) for v in confusion[k])) for k, name in enumerate(spec.names)}


@torch.no_grad()
def predict_volume(
    slice_predictor,
    data: np.ndarray,
    channel_mapping,
    spec: LabelSpec,
    batch_size: int,
    before_batch: Callable[[list[int]], None] | None = None,
) -> np.ndarray:
    """Predict every slice of a preprocessed case (C,S,H,W) -> label map (S,H,W) int16.

    ``slice_predictor`` is the predictor's :class:`samdg.training.slices.SlicePredictor` (same fitting, in-plane
    windows and probability rule as ``samdg_predict``); ``before_batch(slice indices)`` runs before each batch
    (the trainer uses it to point the embedding cache at the batch's slices).
    """
    probabilities = slice_predictor.predict_volume(data, channel_mapping, batch_size, before_batch)
    label_map = label_map_from_probabilities(torch.from_numpy(probabilities).transpose(0, 1), spec)
    return label_map.numpy().astype(np.int16)


def volume_dice(prediction: np.ndarray, reference: np.ndarray, spec: LabelSpec) -> dict[str, float]:
    """Per-class Dice of two (S,H,W) label maps over the whole volume (NaN when both are empty)."""
    confusion = class_confusion(torch.from_numpy(prediction.astype(np.int64)),
                                torch.from_numpy(reference.astype(np.int64)), spec)
    return dice_per_class(confusion, spec)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module):
    """Put ``module`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
