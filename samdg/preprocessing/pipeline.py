"""The one preprocessing function, shared by training and prediction, and its inverse.

Order (nnU-Net's): transpose to (slice, row, col) -> crop to the nonzero box -> normalise to [0,1] (before
resampling, so the nonzero box still matches the voxels it was computed on) -> resample in-plane to the target
spacing (the number of slices never changes). Every step is recorded in the returned properties, and
:func:`invert_to_original` undoes them in reverse order: resample back -> un-crop -> un-transpose. Only the
resampling is lossy; without it the inverse is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from samdg.errors import SamdgError
from samdg.imageio.geometry import Geometry
from samdg.labels import MAX_LABEL_VALUE
from samdg.planning.plans import Plans
from samdg.preprocessing.cropping import crop, full_box, uncrop
from samdg.preprocessing.normalization import normalize
from samdg.preprocessing.resampling import new_inplane_shape, resample_image, resample_labels
from samdg.utils.bounding_box import nonzero_bounding_box


def _as_geometry(geometry: Geometry | dict) -> Geometry:
    return geometry if isinstance(geometry, Geometry) else Geometry.from_dict(geometry)


def slices_with_label(seg: np.ndarray) -> dict[str, list[int]]:
    """(S,H,W) label map -> {label value: indices of the slices containing it} (background left out)."""
    num_slices = seg.shape[0]
    low, high = (int(seg.min()), int(seg.max())) if seg.size else (0, 0)
    if low >= 0 and num_slices * (high + 1) <= 50_000_000:
        # one bincount over (slice, value) pairs instead of a unique() per slice
        pairs = np.arange(num_slices, dtype=np.int64)[:, None, None] * (high + 1) + seg
        counts = np.bincount(pairs.ravel(), minlength=num_slices * (high + 1)).reshape(num_slices, high + 1)
        return {str(v): np.flatnonzero(counts[:, v]).tolist() for v in range(1, high + 1) if counts[:, v].any()}
    found: dict[int, list[int]] = {}
    for s in range(num_slices):
        for value in np.unique(seg[s]):
            if value != 0:
                found.setdefault(int(value), []).append(s)
    return {str(k): found[k] for k in sorted(found)}


def preprocess_case(image: np.ndarray, geometry: Geometry | dict, plans: Plans,
                    label: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Raw case -> preprocessed arrays and the properties that invert them.

    Args:
        image: (C,Z,Y,X) canonical intensities (from ``samdg.imageio.read_case``).
        geometry: the case's Geometry (or its dict).
        plans: the dataset's plans.
        label: (Z,Y,X) or (1,Z,Y,X) integer label map, or None (prediction).

    Returns:
        data: (C,S,H,W) float32 in [0,1]; seg: (1,S,H,W) int16 or None; properties: JSON-serialisable dict
        (shapes and boxes in transposed (slice,row,col) order).
    """
    geometry = _as_geometry(geometry)
    if image.ndim != 4:
        raise SamdgError(f"preprocess_case expects a (C,Z,Y,X) image, got shape {image.shape}")
    if image.shape[0] != plans.num_channels:
        raise SamdgError(f"the image has {image.shape[0]} channels, the plans of {plans.dataset_name} expect "
                         f"{plans.num_channels}")
    if label is not None:
        label = np.asarray(label)
        label = label[0] if label.ndim == 4 else label
        if label.shape != image.shape[1:]:
            raise SamdgError(f"label shape {label.shape} does not match image shape {image.shape[1:]}")
        if label.size and (label.min() < 0 or label.max() > MAX_LABEL_VALUE):
            raise SamdgError(f"label values {int(label.min())}..{int(label.max())} do not fit the int16 label maps "
                             f"of preprocessing (0..{MAX_LABEL_VALUE})")
    forward = list(plans.transpose_forward)
    data = image.transpose(0, *[a + 1 for a in forward])
    spacing = [float(geometry.spacing[a]) for a in forward]
    shape_before = [int(s) for s in data.shape[1:]]

    box = nonzero_bounding_box(data) if plans.crop_to_nonzero else full_box(data.shape[1:])
    data = crop(data, box)
    shape_cropped = [int(s) for s in data.shape[1:]]

    data, windows = normalize(data, plans.normalization)
    new_hw = new_inplane_shape(shape_cropped[1:], spacing[1:], plans.target_spacing[1:])
    data = resample_image(data, new_hw)
    np.clip(data, 0.0, 1.0, out=data)  # bicubic overshoots slightly at edges
    seg = _label_path(label, forward, box, new_hw)[None] if label is not None else None

    properties = {
        "geometry": geometry.to_dict(),
        "spacing": [float(s) for s in geometry.spacing],
        "spacing_transposed": spacing,
        "spacing_after_resampling": [spacing[0], *map(float, plans.target_spacing[1:])],
        "shape_before_cropping": shape_before,
        "bbox_used_for_cropping": box,
        "shape_after_cropping_before_resampling": shape_cropped,
        "shape_after_resampling": [int(s) for s in data.shape[1:]],
        "normalization_windows": windows,
        "plans_hash": plans.preprocessing_hash(),
    }
    if seg is not None:
        properties["slices_with_label"] = slices_with_label(seg[0])
    return data, seg, properties


def label_to_preprocessed(label: np.ndarray, properties: dict[str, Any], plans: Plans) -> np.ndarray:
    """(Z,Y,X) canonical label map (or mask) of a case -> (S,H,W) int16, by the label path of
    :func:`preprocess_case` with the crop box and shape it recorded in ``properties``."""
    new_hw = tuple(int(v) for v in properties["shape_after_resampling"][1:])
    return _label_path(label, list(plans.transpose_forward), properties["bbox_used_for_cropping"], new_hw)


def _label_path(label: np.ndarray, forward: list[int], box: list[list[int]], new_hw: tuple[int, int]) -> np.ndarray:
    """Transpose to (slice,row,col), crop to ``box``, resample in-plane to ``new_hw`` (nearest) -> int16."""
    cropped = crop(label.transpose(forward), box)
    return resample_labels(np.ascontiguousarray(cropped).astype(np.int16, copy=False), new_hw)


def invert_to_original(array: np.ndarray, properties: dict[str, Any], plans: Plans,
                       fill_value: float = 0.0) -> np.ndarray:
    """Preprocessed-space prediction -> canonical space of the original image.

    Args:
        array: (K,S,H,W) float (probabilities or logits: resampled bilinearly) or (S,H,W) integer label map
            (resampled one-hot, so no new labels appear).
        properties: the properties :func:`preprocess_case` returned for the case.
        fill_value: value outside the cropped box for float input (0 for probabilities; pass a large negative
            number for logits). Label maps are filled with 0.

    Returns:
        (K,Z,Y,X) float32 or (Z,Y,X) of the input's integer dtype, on the grid of ``geometry.canonical_shape``.
    """
    array = np.asarray(array)
    is_label = np.issubdtype(array.dtype, np.integer) or array.dtype == bool
    expected = tuple(properties["shape_after_resampling"])
    if (array.shape if is_label else array.shape[1:]) != expected:
        kind = "(S,H,W) label map" if is_label else "(K,S,H,W) array"
        raise SamdgError(f"invert_to_original: expected a {kind} with spatial shape {expected}, got {array.shape}")
    cropped_hw = tuple(properties["shape_after_cropping_before_resampling"][1:])
    box = properties["bbox_used_for_cropping"]
    full = tuple(properties["shape_before_cropping"])
    if is_label:
        restored = resample_labels(array.astype(np.int16 if array.dtype == bool else array.dtype), cropped_hw)
        restored = uncrop(restored, box, full, 0).astype(array.dtype, copy=False)
        return np.ascontiguousarray(restored.transpose(plans.transpose_backward))
    restored = resample_image(array.astype(np.float32, copy=False), cropped_hw, mode="bilinear")
    restored = uncrop(restored, box, full, fill_value)
    return np.ascontiguousarray(restored.transpose(0, *[a + 1 for a in plans.transpose_backward]))
