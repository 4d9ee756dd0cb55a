"""Geometry of an image file and the canonical orientation samdg works in.

Every 3D volume is turned, on reading, into the closest RAS orientation with array axes (Z,Y,X) = (S,A,R), so
that slice ``z`` of a CT stored as RAS and of an MR stored as LPS show the same anatomy the same way round. The
:class:`Geometry` remembers the axis permutation and flips that took the file's array there, plus everything
needed to write a result with the input's exact spacing, origin, direction, shape and format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FAKE_2D_SPACING_FACTOR = 999.0  # nnU-Net's rule: a 2D image is (1,Y,X) with a huge spacing on the dummy axis


@dataclass
class Geometry:
    """Where an array came from and how to put it back.

    Attributes:
        spacing: voxel size in mm along the canonical array axes (Z,Y,X).
        original_shape: spatial shape of the array as stored in the file (i,j,k for 3D; Y,X for 2D).
        original_affine: 4x4 voxel (i,j,k) -> RAS world matrix of the file (identity-like for 2D).
        ornt: per file axis i, ``[canonical RAS axis, +1 | -1]`` (nibabel orientation convention).
        io_backend: ``nibabel`` | ``simpleitk`` | ``natural2d``.
        file_ending: e.g. ``.nii.gz``.
        backend: backend-specific items needed to rewrite the file exactly (header bytes, sitk origin, ...).
    """

    spacing: tuple[float, float, float]
    original_shape: tuple[int, ...]
    original_affine: list[list[float]]
    ornt: list[list[float]]
    io_backend: str
    file_ending: str
    backend: dict[str, Any] = field(default_factory=dict)

    @property
    def is_2d(self) -> bool:
        return self.io_backend == "natural2d"

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        if self.is_2d:
            return (1, *self.original_shape)
        ras_shape = [0, 0, 0]
        for file_axis, (ras_axis, _) in enumerate(self.ornt):
            ras_shape[int(ras_axis)] = self.original_shape[file_axis]
        return tuple(ras_shape[::-1])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spacing"] = [float(s) for s in self.spacing]
        data["original_shape"] = [int(s) for s in self.original_shape]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        data = dict(data)
        data["spacing"] = tuple(data["spacing"])
        data["original_shape"] = tuple(data["original_shape"])
        return cls(**data)

    def same_grid(self, other: "Geometry", tolerance: float = 1e-3) -> bool:
        """True when both images share shape and (within ``tolerance`` mm) spacing, origin and direction."""
        if tuple(self.original_shape) != tuple(other.original_shape):
            return False
        return bool(np.allclose(self.original_affine, other.original_affine, atol=tolerance, rtol=tolerance))


def orientation_of(affine: np.ndarray) -> np.ndarray:
    """(3,2) nibabel orientation: for each file axis, the closest RAS axis and its sign."""
    import nibabel as nib

    return nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size along file axes i,j,k (column norms of the 3x3 part)."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def to_canonical(array_ijk: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """File-ordered array (I,J,K,...) -> canonical (Z,Y,X,...) = (S,A,R,...)."""
    import nibabel as nib

    ras = nib.orientations.apply_orientation(array_ijk, ornt)
    return np.ascontiguousarray(np.swapaxes(ras, 0, 2))


def from_canonical(array_zyx: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_canonical`."""
    import nibabel as nib

    ras = np.swapaxes(array_zyx, 0, 2)
    inverse = np.zeros_like(np.asarray(ornt, dtype=np.float64))
    for file_axis, (ras_axis, flip) in enumerate(np.asarray(ornt)):
        inverse[int(ras_axis)] = [file_axis, flip]
    return np.ascontiguousarray(nib.orientations.apply_orientation(ras, inverse))


def canonical_spacing(file_spacing: np.ndarray, ornt: np.ndarray) -> tuple[float, float, float]:
    ras_spacing = [0.0, 0.0, 0.0]
    for file_axis, (ras_axis, _) in enumerate(np.asarray(ornt)):
        ras_spacing[int(ras_axis)] = float(file_spacing[file_axis])
    return tuple(ras_spacing[::-1])
