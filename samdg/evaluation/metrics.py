"""Segmentation metrics on binary masks: overlap (Dice, IoU) and surface distances in millimetres (HD95, ASSD).

All functions take boolean masks of shape (Z,Y,X) (or any N-d shape) and, for distances, the voxel spacing in mm
in the same array axis order. Conventions, chosen once and used everywhere in samdg:

- **Whole volume.** Every voxel of the case counts, including slices without the structure, so false positives on
  empty slices are penalised (the released DeSAM / DAPSAM code evaluates foreground slices only).
- **Surface** of a mask: the mask voxels with at least one face neighbour (6-connectivity in 3D, 4 in 2D) outside
  the mask; voxels on the image border count as surface (the world beyond the array is background).
- **Distances** go from the centre of each surface voxel of one mask to the nearest surface-voxel centre of the
  other, in mm (Euclidean distance transform with the spacing as sampling).
- **Symmetric set**: the distances from prediction to reference and from reference to prediction, pooled into one
  set. HD95 is its 95th percentile (numpy's linear interpolation), ASSD its mean. HD95 equals medpy's ``hd95``;
  MONAI instead takes the larger of the two directed 95th percentiles, and medpy's ``assd`` averages the two
  directed means, so values can differ slightly when the two surfaces have very different sizes.
- **Singleton axes** (a 2D image read as (1,Y,X), a single slice) are dropped before surface computations, so
  a 2D mask gets an in-plane surface and in-plane distances. Its dummy-axis spacing is never used.
- **Empty masks** (the same rules as nnU-Net for Dice/IoU):

  ================================  ===========  ====================  ========================
  reference / prediction            Dice, IoU    HD95, ASSD            counted as
  ================================  ===========  ====================  ========================
  both empty                        NaN          NaN                   ``n_both_empty``
  reference empty, prediction not   0            NaN                   ``n_false_positive``
  prediction empty, reference not   0            NaN                   ``n_missed``
  ================================  ===========  ====================  ========================

  NaN values are left out of every mean. A distance to a mask that does not exist is undefined; papers that fill
  it in use different penalties (image diagonal, a fixed 373 mm, ...), which makes means incomparable, so samdg
  reports the count instead and keeps ``n_ref`` / ``n_pred`` per case for anyone who wants to apply a penalty.
- **Ignored voxels** (``valid`` is False, e.g. the dataset's ignore label) are removed from both masks and from
  all counts before anything is computed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "iou", "hd95_mm", "assd_mm")


def confusion_counts(reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> dict[str, int]:
    """True/false positives/negatives over the valid voxels of two boolean masks of equal shape.

    Returns ``{"tp", "fp", "fn", "tn", "n_ref", "n_pred"}`` with ``n_ref = tp + fn`` and ``n_pred = tp + fp``.
    """
    reference, prediction = _check_pair(reference, prediction)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        reference, prediction = reference & valid, prediction & valid
        n_valid = int(np.count_nonzero(valid))
    else:
        n_valid = reference.size
    tp = int(np.count_nonzero(reference & prediction))
    n_ref = int(np.count_nonzero(reference))
    n_pred = int(np.count_nonzero(prediction))
    fp, fn = n_pred - tp, n_ref - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": n_valid - tp - fp - fn, "n_ref": n_ref, "n_pred": n_pred}


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """2TP / (2TP + FP + FN); NaN when both masks are empty."""
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else 2.0 * tp / denominator


def iou_from_counts(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + FP + FN) (Jaccard); NaN when both masks are empty."""
    denominator = tp + fp + fn
    return float("nan") if denominator == 0 else tp / denominator


def dice(reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Dice of two boolean masks of equal shape (NaN when both are empty)."""
    counts = confusion_counts(reference, prediction, valid)
    return dice_from_counts(counts["tp"], counts["fp"], counts["fn"])


def iou(reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks of equal shape (NaN when both are empty)."""
    counts = confusion_counts(reference, prediction, valid)
    return iou_from_counts(counts["tp"], counts["fp"], counts["fn"])


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface of a mask (same shape): mask voxels with a face neighbour outside the mask or the array."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                      valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty boolean masks of equal shape.

    Args:
        reference, prediction: boolean masks, e.g. (Z,Y,X); (1,Y,X) is treated as the 2D mask (Y,X).
        spacing: voxel size in mm per array axis (same order as the mask axes).
        valid: optional boolean mask of voxels that count (False voxels are removed from both masks).

    Returns:
        (prediction_to_reference, reference_to_prediction): 1-D float64 arrays, one distance per surface voxel of
        the first-named mask to the nearest surface voxel of the other.

    Raises:
        ValueError: if either mask is empty after removing invalid voxels (the distance is undefined).
    """
    reference, prediction = _check_pair(reference, prediction)
    spacing = _check_spacing(spacing, reference.ndim)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        reference, prediction = reference & valid, prediction & valid
    if not reference.any() or not prediction.any():
        raise ValueError("surface distances need two non-empty masks")
    reference, prediction, spacing = _drop_singleton_axes(reference, prediction, spacing)
    reference, prediction = _crop_to_union(reference, prediction)
    reference_surface, prediction_surface = surface(reference), surface(prediction)
    # distance_transform_edt measures to the nearest zero, so zeros are put where the target surface lies
    to_reference = ndimage.distance_transform_edt(~reference_surface, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=spacing)
    return to_reference[prediction_surface], to_prediction[reference_surface]


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
         valid: np.ndarray | None = None) -> float:
    """95th percentile of the pooled symmetric surface distances in mm; NaN if either mask is empty."""
    distances = _symmetric_distances(reference, prediction, spacing, valid)
    return float("nan") if distances is None else float(np.percentile(distances, 95))


def assd(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
         valid: np.ndarray | None = None) -> float:
    """Average symmetric surface distance in mm (mean of the pooled set); NaN if either mask is empty."""
    distances = _symmetric_distances(reference, prediction, spacing, valid)
    return float("nan") if distances is None else float(distances.mean())


def compute_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                    valid: np.ndarray | None = None) -> dict[str, float | int]:
    """Every metric for one structure of one case, sharing the distance computation.

    Returns ``dice``, ``iou``, ``hd95_mm``, ``assd_mm`` (floats, NaN per the empty rules of this module) and the
    integer counts ``n_ref``, ``n_pred``, ``tp``, ``fp``, ``fn``, ``tn`` (voxels).
    """
    counts = confusion_counts(reference, prediction, valid)
    result: dict[str, float | int] = {
        "dice": dice_from_counts(counts["tp"], counts["fp"], counts["fn"]),
        "iou": iou_from_counts(counts["tp"], counts["fp"], counts["fn"]),
        "hd95_mm": float("nan"),
        "assd_mm": float("nan"),
    }
    if counts["n_ref"] > 0 and counts["n_pred"] > 0:
        distances = np.concatenate(surface_distances(reference, prediction, spacing, valid))
        result["hd95_mm"] = float(np.percentile(distances, 95))
        result["assd_mm"] = float(distances.mean())
    result.update(counts)
    return result


def _symmetric_distances(reference, prediction, spacing, valid) -> np.ndarray | None:
    counts = confusion_counts(reference, prediction, valid)
    if counts["n_ref"] == 0 or counts["n_pred"] == 0:
        return None
    return np.concatenate(surface_distances(reference, prediction, spacing, valid))


def _check_pair(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, prediction = np.asarray(reference, dtype=bool), np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    return reference, prediction


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {ndim} positive numbers (one per mask axis), got {spacing}")
    return spacing


def _drop_singleton_axes(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...]):
    """Remove axes of length 1 (a 2D image stored as (1,Y,X)); keep at least one axis."""
    keep = [axis for axis, n in enumerate(reference.shape) if n > 1] or [reference.ndim - 1]
    shape = tuple(reference.shape[axis] for axis in keep)
    return reference.reshape(shape), prediction.reshape(shape), tuple(spacing[axis] for axis in keep)


def _crop_to_union(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus one voxel (where the image allows).

    Distances are unchanged: every surface voxel lies in the box, and the one-voxel margin keeps the surface
    identical (a mask touching the crop edge would otherwise gain surface there). This makes the distance
    transforms cost the size of the structure, not of the whole scan.
    """
    union = reference | prediction
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        occupied = np.flatnonzero(union.any(axis=others)) if others else np.flatnonzero(union)
        box.append(slice(max(int(occupied[0]) - 1, 0), min(int(occupied[-1]) + 2, union.shape[axis])))
    box = tuple(box)
    return reference[box], prediction[box]
