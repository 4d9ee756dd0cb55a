"""Tiny label files written in code for the evaluation tests (SAMDG_* roots come from tests/conftest.py)."""

import numpy as np
import pytest


def write_nifti_label(path, array_zyx, spacing_zyx=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """Save a canonical (Z,Y,X) label map as a RAS NIfTI file (file axes i,j,k = X,Y,Z)."""
    import nibabel as nib

    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    affine[:3, 3] = origin
    data = np.ascontiguousarray(np.asarray(array_zyx, dtype=np.uint8).transpose(2, 1, 0))
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture
def png_label_folders(tmp_path):
    """Writes reference and prediction folders ``tmp_path/ref``, ``tmp_path/pred`` of 2D PNG label maps:
    ``png_label_folders({case: ((Y,X) reference, (Y,X) prediction)})`` -> (reference_dir, prediction_dir)."""
    from PIL import Image

    def write(cases):
        reference_dir, prediction_dir = tmp_path / "ref", tmp_path / "pred"
        reference_dir.mkdir()
        prediction_dir.mkdir()
        for case, (reference, prediction) in cases.items():
            Image.fromarray(np.asarray(reference, dtype=np.uint8)).save(reference_dir / f"{case}.png")
            Image.fromarray(np.asarray(prediction, dtype=np.uint8)).save(prediction_dir / f"{case}.png")
        return reference_dir, prediction_dir

    return write


@pytest.fixture
def two_domain_folders(tmp_path):
    """Reference and prediction folders: 3 cases (2 in domain CT, 1 in MR), labels liver=1 and spleen=2.

    Spacing (3,1,1) mm. Per case (hand-counted, see the tests):
      ct_1: liver exact (Dice 1, HD95 0); spleen exact.
      ct_2: liver prediction shifted one slice up (the 3x3x3 cubes of the metrics test); spleen missed.
      mr_1: liver exact; spleen absent from the reference but predicted (false positive).
    """
    reference_dir, prediction_dir = tmp_path / "labelsTs", tmp_path / "predictions"
    reference_dir.mkdir()
    prediction_dir.mkdir()
    spacing = (3.0, 1.0, 1.0)

    def cube(z0, label, volume):
        volume[z0:z0 + 3, 2:5, 2:5] = label
        return volume

    def spleen(volume):
        volume[1:3, 6:8, 6:8] = 2
        return volume

    empty = lambda: np.zeros((8, 9, 9), dtype=np.uint8)  # noqa: E731
    cases = {
        "ct_1": (spleen(cube(2, 1, empty())), spleen(cube(2, 1, empty()))),
        "ct_2": (spleen(cube(2, 1, empty())), cube(3, 1, empty())),
        "mr_1": (cube(2, 1, empty()), spleen(cube(2, 1, empty()))),
    }
    for case, (reference, prediction) in cases.items():
        write_nifti_label(reference_dir / f"{case}.nii.gz", reference, spacing)
        write_nifti_label(prediction_dir / f"{case}.nii.gz", prediction, spacing)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "spleen": 2},
        "numTraining": 0,
        "file_ending": ".nii.gz",
        "domains": {"ct_1": "CT", "ct_2": "CT", "mr_1": "MR"},
    }
    return reference_dir, prediction_dir, dataset_json


@pytest.fixture
def write_label():
    """The NIfTI label writer above, for tests that build their own cases."""
    return write_nifti_label
