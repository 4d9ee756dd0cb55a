"""samdg_plan_and_preprocess on damaged outputs and on cases that fail mid-run."""

from __future__ import annotations

import json

import numpy as np
from raw_builders import make_ct_dataset, make_mr_dataset, save_nifti
from raw_builders import run_plan_and_preprocess as _run


def test_a_truncated_or_damaged_array_is_redone_by_a_plain_rerun(samdg_roots, capsys):
    make_ct_dataset(samdg_roots["raw"], dataset_id=821, num_cases=3)
    args = ("-d", "821", "-np", "1", "--no_pbar", "--variant", "tiny_vit_test")
    assert _run(capsys, *args)[0] == 0
    folder = samdg_roots["preprocessed"] / "Dataset821_CTlike" / "samdgPlans_2d"
    intact = {path.name: path.read_bytes() for path in folder.glob("*.npy")}
    truncated, damaged = folder / "case0.npy", folder / "case2_seg.npy"
    truncated.write_bytes(intact["case0.npy"][: len(intact["case0.npy"]) // 2])
    damaged.write_bytes(b"\0" * len(intact["case2_seg.npy"]))

    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "1 of 3 cases already preprocessed with this plan; skipped" in out
    assert {path.name: path.read_bytes() for path in folder.glob("*.npy")} == intact


def _binary_mr_case(folder, case_id: str) -> None:
    """Overwrite a case's channels with two values only (0 outside, 500 inside): MR normalisation, which sets its
    window from the nonzero voxels, maps such an image to zero everywhere."""
    for channel in sorted((folder / "imagesTr").glob(f"{case_id}_*.nii.gz")):
        import nibabel as nib

        image = nib.load(str(channel))
        data = (np.asanyarray(image.dataobj) > 0).astype(np.float32) * 500
        save_nifti(data, np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0)), channel)


def test_an_image_blank_after_normalisation_with_labelled_foreground_is_named(samdg_roots, capsys):
    folder = make_mr_dataset(samdg_roots["raw"], dataset_id=822, num_cases=2, orientations=("RAS",))
    _binary_mr_case(folder, "mr0")
    code, _, err = _run(capsys, "-d", "822", "-np", "1", "--no_pbar", "--variant", "tiny_vit_test")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    images = f"{folder / 'imagesTr' / 'mr0_0000.nii.gz'}, {folder / 'imagesTr' / 'mr0_0001.nii.gz'}"
    assert f"{images}: the image is blank after intensity normalisation" in err
    assert f"its label {folder / 'labelsTr' / 'mr0.nii.gz'} holds foreground" in err
    # the folder this run created is gone again: no case was finished
    assert not any(samdg_roots["preprocessed"].iterdir())


def test_a_failed_run_never_removes_a_folder_it_did_not_create(samdg_roots, capsys):
    folder = make_mr_dataset(samdg_roots["raw"], dataset_id=823, num_cases=2, orientations=("RAS",))
    _binary_mr_case(folder, "mr0")
    existing = samdg_roots["preprocessed"] / "Dataset823_MRlike"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    code, _, _ = _run(capsys, "-d", "823", "-np", "1", "--no_pbar", "--variant", "tiny_vit_test")
    assert code == 2 and (existing / "notes.txt").read_text() == "mine"


def test_a_region_dataset_preprocesses(samdg_roots, capsys):
    folder = make_ct_dataset(samdg_roots["raw"], dataset_id=824, num_cases=2)
    meta = json.loads((folder / "dataset.json").read_text())
    meta.update(labels={"background": 0, "organ_or_bone": [1, 2], "bone": 2}, regions_class_order=[1, 2])
    (folder / "dataset.json").write_text(json.dumps(meta))
    code, _, err = _run(capsys, "-d", "824", "-np", "1", "--no_pbar", "--variant", "tiny_vit_test")
    assert code == 0, err
    assert len(list((samdg_roots["preprocessed"] / "Dataset824_CTlike" / "samdgPlans_2d").glob("*_seg.npy"))) == 2
