"""The real abdomen CT/MR pair of ../shared as a raw samdg dataset (labels reduced to the organs both maps share)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

PAIRS = {"ct": ("example_ct_sm", "example_seg"), "mr": ("example_mr_sm", "example_seg_mr")}
SHARED_ORGANS = {1: 1, 2: 2, 3: 3, 5: 4}  # spleen, kidney_right, kidney_left, liver (same ids in CT and MR maps)


def write_real_pair(raw: Path, shared_data: Path) -> None:
    """Cases ``ct`` and ``mr`` (domains CT and MR) in nnU-Net's raw layout under ``raw``."""
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for case, (image_name, label_name) in PAIRS.items():
        (raw / "imagesTr" / f"{case}_0000.nii.gz").write_bytes((shared_data / f"{image_name}.nii.gz").read_bytes())
        label = nib.load(shared_data / f"{label_name}.nii.gz")
        values = np.asarray(label.dataobj)
        reduced = np.zeros_like(values)
        for old, new in SHARED_ORGANS.items():
            reduced[values == old] = new
        nib.save(nib.Nifti1Image(reduced, label.affine, label.header), raw / "labelsTr" / f"{case}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "image"}, "file_ending": ".nii.gz", "numTraining": 2,
        "domains": {"ct": "CT", "mr": "MR"},
        "labels": {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 4}}))
