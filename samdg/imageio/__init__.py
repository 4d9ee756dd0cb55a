"""Reading and writing images and labels behind one small interface.

``read_case`` / ``read_label`` return arrays in samdg's canonical orientation (see :mod:`.geometry`) with a
:class:`Geometry`; ``write_label`` / ``write_image`` undo the reorientation and write the input's exact geometry
and format. NIfTI goes through nibabel; NRRD/MHA through SimpleITK (imported lazily); PNG/BMP/TIFF are 2D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from samdg.errors import SamdgError
from samdg.imageio import natural2d, nifti, simpleitk_io
from samdg.imageio.geometry import Geometry

ENDINGS_3D = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
ENDINGS_2D = (".png", ".bmp", ".tif", ".tiff")
SUPPORTED_ENDINGS = ENDINGS_3D + ENDINGS_2D

__all__ = ["Geometry", "SUPPORTED_ENDINGS", "file_ending_of", "read_case", "read_image", "read_label", "read_header",
           "write_image", "write_label"]


def file_ending_of(path: str | Path) -> str:
    name = str(path).lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    raise SamdgError(f"{path}: unsupported file type; supported endings: {', '.join(SUPPORTED_ENDINGS)}")


def _existing_file_ending(path: Path) -> str:
    ending = file_ending_of(path)
    if not path.is_file():
        raise SamdgError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SamdgError(f"{path}: file is empty (0 bytes)")
    return ending


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """One file -> (array (C,Z,Y,X) float32 canonical, Geometry). C > 1 only for RGB 2D images."""
    path = Path(path)
    ending = _existing_file_ending(path)
    if ending in (".nii", ".nii.gz"):
        return nifti.read(path)
    if ending in ENDINGS_2D:
        return natural2d.read(path, ending)
    return simpleitk_io.read(path, ending)


def read_header(path: str | Path) -> tuple[tuple[int, int, int], Geometry]:
    """Canonical spatial shape (Z,Y,X) and Geometry without reading the voxel data (where the format allows)."""
    path = Path(path)
    ending = _existing_file_ending(path)
    if ending in (".nii", ".nii.gz"):
        _, geometry = nifti.read_header(path)
    elif ending in ENDINGS_2D:
        _, geometry = natural2d.read_header(path, ending)
    else:
        _, geometry = simpleitk_io.read_header(path, ending)
    return geometry.canonical_shape, geometry


def read_case(image_paths: Sequence[str | Path]) -> tuple[np.ndarray, Geometry]:
    """Channel files of one case -> (array (C,Z,Y,X) float32, Geometry of the first channel).

    All channels must share the grid (shape, spacing, origin, direction); otherwise a SamdgError names both files.
    """
    if not image_paths:
        raise SamdgError("read_case needs at least one channel file")
    arrays, reference = [], None
    for path in image_paths:
        array, geometry = read_image(path)
        if reference is None:
            reference = geometry
        elif not geometry.same_grid(reference):
            raise SamdgError(f"{path}: geometry differs from {image_paths[0]} (shape, spacing, origin or direction)")
        arrays.append(array)
    return np.concatenate(arrays, axis=0), reference


def read_label(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """A label map -> (array (Z,Y,X) int16/int32 canonical, Geometry). Non-integer values are an error."""
    array, geometry = read_image(path)
    if array.shape[0] != 1:
        if array.shape[0] == 3 and np.array_equal(array[0], array[1]) and np.array_equal(array[0], array[2]):
            array = array[:1]  # grey label saved as RGB
        else:
            raise SamdgError(f"{path}: a label map must have one channel, found {array.shape[0]}")
    values = array[0]
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise SamdgError(f"{path}: label map contains non-integer values")
    dtype = np.int16 if values.size == 0 or (values.min() >= -32768 and values.max() < 32768) else np.int32
    return values.astype(dtype), geometry


def _write(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    if geometry.io_backend == "nibabel":
        nifti.write(array, geometry, path)
    elif geometry.io_backend == "natural2d":
        natural2d.write(array, geometry, path)
    else:
        simpleitk_io.write(array, geometry, path)


def write_label(array: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Canonical (Z,Y,X) integer label map -> file with the input's geometry (uint8 when it fits)."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(geometry.canonical_shape):
        raise SamdgError(f"{path}: label shape {array.shape} does not match the image grid {geometry.canonical_shape}")
    dtype = np.uint8 if array.size == 0 or (array.min() >= 0 and array.max() < 256) else np.int16
    _write(array.astype(dtype), geometry, Path(path))


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Canonical (Z,Y,X) single-channel (or (C,1,Y,X) RGB 2D) array -> file with the input's geometry."""
    array = np.asarray(array)
    if geometry.io_backend == "natural2d":
        _write(array, geometry, Path(path))
        return
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    _write(array.astype(np.float32), geometry, Path(path))
