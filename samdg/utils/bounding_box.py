"""The box enclosing the nonzero voxels of an image: what preprocessing crops to and what the fingerprint
measures (one definition for both, below the two packages)."""

from __future__ import annotations

import numpy as np


def nonzero_bounding_box(image: np.ndarray) -> list[list[int]]:
    """(C,Z,Y,X) image -> [[z0,z1],[y0,y1],[x0,x1]] enclosing every voxel that is nonzero in any channel."""
    mask = np.any(image != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=others))
        if present.size == 0:
            return [[0, int(s)] for s in mask.shape]
        box.append([int(present[0]), int(present[-1]) + 1])
    return box
