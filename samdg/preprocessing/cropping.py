"""Crop a case to the bounding box of its nonzero voxels, and put a cropped array back.

Boxes are lists of ``[start, stop)`` pairs, one per spatial axis, in the axis order of the array they were
computed on. An image without any nonzero voxel keeps its full extent.
"""

from __future__ import annotations

import numpy as np


def full_box(shape: tuple[int, ...]) -> list[list[int]]:
    return [[0, int(s)] for s in shape]


def crop(array: np.ndarray, box: list[list[int]]) -> np.ndarray:
    """Crop the last ``len(box)`` axes of ``array`` to ``box`` (a view)."""
    spatial = tuple(slice(start, stop) for start, stop in box)
    return array[(Ellipsis, *spatial)]


def uncrop(array: np.ndarray, box: list[list[int]], full_shape: tuple[int, ...], fill_value: float = 0) -> np.ndarray:
    """Inverse of :func:`crop`: place ``array`` (..., cropped spatial) into ``fill_value`` of ``full_shape``."""
    leading = array.shape[: array.ndim - len(box)]
    out = np.full((*leading, *full_shape), fill_value, dtype=array.dtype)
    out[(Ellipsis, *(slice(start, stop) for start, stop in box))] = array
    return out
