"""2D images: PNG/BMP (Pillow) and TIFF (tifffile), grey or RGB.

A 2D image becomes a single-slice volume (C,1,Y,X) with spacing (999 * max in-plane, sy, sx) on the dummy axis,
nnU-Net's convention, so the planner never treats that axis as in-plane. TIFF files may carry a pixel size;
PNG in-plane spacing is 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdg.errors import SamdgError, one_line
from samdg.imageio.geometry import FAKE_2D_SPACING_FACTOR, Geometry
from samdg.imageio.voxels import require_real
from samdg.utils.files import atomic_path


def _read_pixels(path: Path, ending: str) -> np.ndarray:
    try:
        if ending in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(str(path)))
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image)
    except FileNotFoundError:
        raise SamdgError(f"{path}: file not found") from None
    except Exception as error:
        raise SamdgError(f"{path}: cannot be read as a 2D image ({one_line(error)})") from None


def _channels_first(path: Path, pixels: np.ndarray) -> np.ndarray:
    if pixels.size == 0:
        raise SamdgError(f"{path}: is empty")
    if pixels.ndim == 2:
        return pixels[None]
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        if pixels.shape[-1] == 4:
            if not np.all(pixels[..., 3] == pixels[..., 3].max()):
                raise SamdgError(f"{path}: has a non-constant alpha channel; save it as RGB or grey")
            pixels = pixels[..., :3]
        return np.moveaxis(pixels, -1, 0)
    raise SamdgError(f"{path}: has shape {pixels.shape}; expected a grey (Y,X) or RGB (Y,X,3) 2D image")


def _geometry(shape_yx: tuple[int, int], ending: str) -> Geometry:
    return Geometry(
        spacing=(FAKE_2D_SPACING_FACTOR, 1.0, 1.0),
        original_shape=tuple(int(s) for s in shape_yx),
        original_affine=np.eye(4).tolist(),
        ornt=[[0, 1], [1, 1], [2, 1]],
        io_backend="natural2d",
        file_ending=ending,
    )


def read(path: Path, ending: str) -> tuple[np.ndarray, Geometry]:
    """-> (array (C,1,Y,X) float32, Geometry); C is 1 (grey) or 3 (RGB)."""
    pixels = _channels_first(path, require_real(path, _read_pixels(path, ending)))
    return pixels[:, None].astype(np.float32), _geometry(pixels.shape[1:], ending)


def read_header(path: Path, ending: str) -> tuple[tuple[int, int, int], Geometry]:
    array, geometry = read(path, ending)
    return tuple(array.shape[1:]), geometry


def write(array_zyx: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write a (1,Y,X) label/grey array, or (3,1,Y,X) RGB, as the original 2D format."""
    pixels = np.asarray(array_zyx)
    pixels = pixels[0] if pixels.ndim == 3 else np.moveaxis(pixels[:, 0], 0, -1)
    if geometry.file_ending not in (".tif", ".tiff") or np.issubdtype(pixels.dtype, np.integer):
        # PNG/BMP hold integers only: values are rounded and kept in the 8- or 16-bit range they fit
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535 or not np.all(np.isfinite(pixels))):
            raise SamdgError(f"{path}: values outside 0..65535 cannot be stored as {geometry.file_ending}")
        pixels = np.rint(pixels)
        pixels = pixels.astype(np.uint8 if pixels.max(initial=0) < 256 else np.uint16)
    with atomic_path(path) as tmp:
        if geometry.file_ending in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(str(tmp), pixels)
        else:
            from PIL import Image

            Image.fromarray(pixels).save(tmp, format=geometry.file_ending.lstrip(".").upper().replace("TIF", "TIFF"))
