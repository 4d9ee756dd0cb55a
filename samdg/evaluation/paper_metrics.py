"""The papers' Dice variants, reported beside samdg's whole-volume metrics (``--paper-metrics``), never instead.

The released DeSAM and DAPSAM code evaluates prostate volumes on the slices that contain the prostate only, and
the fundus papers (DAPSAM on RIGA+, ESP-MedSAM) average a Dice per 2D image. Re-running their tables needs those
numbers, but both **inflate Dice**: a slice (or image) without the structure never enters the score, so false
positives there cost nothing. samdg's ``dice`` column (every voxel of the case) stays the headline.

Both functions take boolean masks of shape (Z,Y,X) — a 2D image is (1,Y,X) — and slice across axis 0, the
file's slowest axis (the slice axis of an axially acquired NIfTI, as the papers slice their volumes):

- ``paper_dice_fg_slices``: one Dice over the stack of the slices whose *reference* contains the structure
  (DeSAM's and DAPSAM's 3D Dice over foreground-containing slices).
- ``paper_dice_per_image``: the mean over those same slices of each slice's own 2D Dice (per-image Dice; for a
  2D case, the Dice of its one image when the reference holds the structure).

A case whose reference lacks the structure has no foreground slice: both are NaN (left out of every mean), the
way those images were never evaluated by the papers. Voxels outside ``valid`` (the ignore label) are removed
first, as for the whole-volume metrics.
"""

from __future__ import annotations

import numpy as np

from samdg.evaluation.metrics import confusion_counts, dice_from_counts

PAPER_METRIC_NAMES = ("paper_dice_fg_slices", "paper_dice_per_image")
INFLATION_NOTE = ("paper_dice_fg_slices and paper_dice_per_image are the papers' Dice variants (--paper-metrics): "
                  "they score only the slices / images whose reference contains the structure, so false positives "
                  "on empty slices cost nothing and they inflate Dice; compare them only with published numbers and "
                  "use the whole-volume dice for everything else.")


def foreground_slices(reference: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(Z,) bool: the slices along axis 0 whose (valid) reference voxels contain the structure."""
    reference = np.asarray(reference, dtype=bool)
    if valid is not None:
        reference = reference & np.asarray(valid, dtype=bool)
    return reference.reshape(reference.shape[0], -1).any(axis=1)


def dice_fg_slices(reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Dice over the stack of reference-foreground slices (axis 0) of two (Z,Y,X) masks; NaN without any."""
    keep = foreground_slices(reference, valid)
    if not keep.any():
        return float("nan")
    counts = confusion_counts(reference[keep], prediction[keep], None if valid is None else np.asarray(valid)[keep])
    return dice_from_counts(counts["tp"], counts["fp"], counts["fn"])


def dice_per_image(reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over the reference-foreground slices (axis 0) of each slice's 2D Dice; NaN without any."""
    keep = np.flatnonzero(foreground_slices(reference, valid))
    if keep.size == 0:
        return float("nan")
    scores = []
    for index in keep:
        counts = confusion_counts(reference[index], prediction[index],
                                  None if valid is None else np.asarray(valid)[index])
        scores.append(dice_from_counts(counts["tp"], counts["fp"], counts["fn"]))
    return float(np.mean(scores))


def compute_paper_metrics(reference: np.ndarray, prediction: np.ndarray,
                          valid: np.ndarray | None = None) -> dict[str, float]:
    """``{paper_dice_fg_slices, paper_dice_per_image}`` for one structure of one case ((Z,Y,X) boolean masks)."""
    reference, prediction = np.asarray(reference, dtype=bool), np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape or reference.ndim < 2:
        raise ValueError(f"paper metrics need two masks of one shape with a slice axis, got {reference.shape} and "
                         f"{prediction.shape}")
    return {"paper_dice_fg_slices": dice_fg_slices(reference, prediction, valid),
            "paper_dice_per_image": dice_per_image(reference, prediction, valid)}
