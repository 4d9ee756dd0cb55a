"""NRRD, MHA (and anything else SimpleITK reads) through SimpleITK, imported only when such a file is met."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdg.errors import SamdgError
from samdg.imageio.geometry import Geometry, canonical_spacing, from_canonical, orientation_of, to_canonical
from samdg.imageio.voxels import require_real
from samdg.utils.files import atomic_path

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _sitk():
    # Lazy on purpose: SimpleITK (53 MB) is absent where samdg runs from a carried wheel set (the GPU machine), so
    # NIfTI goes through nibabel there and only .nrrd/.mha files need it.
    try:
        import SimpleITK
    except ImportError:
        raise SamdgError("reading .nrrd/.mha files needs SimpleITK: pip install SimpleITK") from None
    return SimpleITK


def _geometry(path: Path, size_ijk, spacing, origin, direction, ending: str) -> Geometry:
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)
    ornt = orientation_of(affine)
    return Geometry(
        spacing=canonical_spacing(np.asarray(spacing), ornt),
        original_shape=tuple(int(s) for s in size_ijk),
        original_affine=affine.tolist(),
        ornt=ornt.tolist(),
        io_backend="simpleitk",
        file_ending=ending,
        backend={"spacing": list(spacing), "origin": list(origin), "direction": direction.ravel().tolist()},
    )


def _check_dimension(path: Path, dimension: int, components: int) -> None:
    if dimension != 3:
        raise SamdgError(f"{path}: is {dimension}D, expected a 3D volume (one file per channel)")
    if components != 1:
        raise SamdgError(f"{path}: has {components} components per voxel; store each channel as its own file")


def read_header(path: Path, ending: str) -> tuple[tuple[int, int, int], Geometry]:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise SamdgError(f"{path}: cannot be read ({str(error).strip().splitlines()[-1]})") from None
    _check_dimension(path, reader.GetDimension(), reader.GetNumberOfComponents())
    size = reader.GetSize()
    return tuple(size), _geometry(path, size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), ending)


def read(path: Path, ending: str) -> tuple[np.ndarray, Geometry]:
    """-> (array (1,Z,Y,X) float32 canonical, Geometry)."""
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise SamdgError(f"{path}: cannot be read ({str(error).strip().splitlines()[-1]})") from None
    _check_dimension(path, image.GetDimension(), image.GetNumberOfComponentsPerPixel())
    geometry = _geometry(path, image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), ending)
    data_ijk = require_real(path, sitk.GetArrayFromImage(image)).transpose(2, 1, 0)
    return to_canonical(data_ijk, np.asarray(geometry.ornt))[None].astype(np.float32, copy=False), geometry


def write(array_zyx: np.ndarray, geometry: Geometry, path: Path) -> None:
    sitk = _sitk()
    data_ijk = from_canonical(array_zyx, np.asarray(geometry.ornt))
    image = sitk.GetImageFromArray(np.ascontiguousarray(data_ijk.transpose(2, 1, 0)))
    image.SetSpacing(geometry.backend["spacing"])
    image.SetOrigin(geometry.backend["origin"])
    image.SetDirection(geometry.backend["direction"])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
