"""Damaged image files: a SamdgError that names the file, on one line (the CLI prints it as one)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from samdg.errors import SamdgError
from samdg.imageio import read_image


def test_truncated_nifti_data_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.int16), np.eye(4)), path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 100]))  # whole header, data cut short
    with pytest.raises(SamdgError, match="image data cannot be read .*the file may be truncated") as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_a_text_file_with_the_nifti_ending(tmp_path):
    path = tmp_path / "case_0000.nii.gz"
    path.write_text("hello")
    with pytest.raises(SamdgError, match="case_0000.nii.gz: cannot be read as NIfTI"):
        read_image(path)


@pytest.mark.parametrize("name", ["case_0000.nii.gz", "case_0000.tif"])
def test_complex_valued_images_are_refused_naming_the_file(tmp_path, name):
    path = tmp_path / name
    voxels = (np.ones((6, 5, 4)) + 2j * np.ones((6, 5, 4))).astype(np.complex64)
    if name.endswith(".tif"):
        import tifffile

        tifffile.imwrite(str(path), voxels[..., 0])
    else:
        nib.save(nib.Nifti1Image(voxels, np.eye(4)), str(path))
    with pytest.raises(SamdgError, match=f"^{path}: holds complex-valued voxels \\(complex64\\)"):
        read_image(path)
