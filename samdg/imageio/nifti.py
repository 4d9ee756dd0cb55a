"""NIfTI through nibabel (no SimpleITK needed, so NIfTI works on machines without it)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from samdg.errors import SamdgError, one_line
from samdg.imageio.geometry import Geometry, canonical_spacing, from_canonical, orientation_of, to_canonical
from samdg.imageio.voxels import require_real
from samdg.utils.files import atomic_path


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise SamdgError(f"{path}: file not found") from None
    except Exception as error:  # nibabel raises many types for damaged files
        raise SamdgError(f"{path}: cannot be read as NIfTI ({one_line(error)})") from None


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        raise SamdgError(f"{path}: is 2D (shape {shape}); 3D volumes are expected for {path.name}")
    if len(shape) != 3:
        raise SamdgError(
            f"{path}: is {len(shape)}D (shape {shape}), expected a 3D volume; store each channel as its own "
            "_XXXX file (samdg_convert_msd splits MSD's 4D files)"
        )
    if min(shape) == 0:
        raise SamdgError(f"{path}: is empty (shape {shape})")
    return shape


def read_header(path: Path) -> tuple[tuple[int, int, int], Geometry]:
    image = _load(path)
    shape = _spatial_shape(path, tuple(int(s) for s in image.shape))
    return shape, _geometry(path, image, shape)


def _geometry(path: Path, image, shape: tuple[int, int, int]) -> Geometry:
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise SamdgError(f"{path}: the header's voxel-to-world matrix is degenerate")
    ornt = orientation_of(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    header = image.header
    return Geometry(
        spacing=canonical_spacing(zooms, ornt),
        original_shape=tuple(shape),
        original_affine=affine.tolist(),
        ornt=ornt.tolist(),
        io_backend="nibabel",
        file_ending=".nii.gz" if path.name.endswith(".nii.gz") else ".nii",
        backend={"header_class": type(header).__name__, "header": base64.b64encode(header.binaryblock).decode()},
    )


def read(path: Path) -> tuple[np.ndarray, Geometry]:
    """-> (array (1,Z,Y,X) float32 canonical, Geometry)."""
    image = _load(path)
    shape = _spatial_shape(path, tuple(int(s) for s in image.shape))
    geometry = _geometry(path, image, shape)
    try:
        data = np.asanyarray(image.dataobj).reshape(shape)
    except Exception as error:
        raise SamdgError(f"{path}: image data cannot be read ({one_line(error)}); the file may be truncated") from None
    require_real(path, data)
    return to_canonical(data, np.asarray(geometry.ornt))[None].astype(np.float32, copy=False), geometry


def write(array_zyx: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write a canonical (Z,Y,X) array with the original header (affine, codes, units); dtype follows the array."""
    import nibabel as nib

    data = from_canonical(array_zyx, np.asarray(geometry.ornt))
    header_class = getattr(nib, geometry.backend.get("header_class", "Nifti1Header"))
    header = (header_class(binaryblock=base64.b64decode(geometry.backend["header"]))
              if "header" in geometry.backend else None)
    image_class = nib.Nifti2Image if header_class is nib.Nifti2Header else nib.Nifti1Image
    image = image_class(data, np.asarray(geometry.original_affine), header=header)
    image.set_data_dtype(data.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
