"""samdg_evaluate never writes its tables into the raw data or among the reference labels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from samdg.cli.evaluate import main


def test_tables_are_not_written_into_raw_data_or_the_reference_folder(samdg_roots, tmp_path, capsys):
    dataset = samdg_roots["raw"] / "Dataset905_Eval"
    references = dataset / "labelsTs"
    references.mkdir(parents=True)
    dataset_json = {"channel_names": {"0": "MR"}, "numTraining": 0, "file_ending": ".nii.gz",
                    "labels": {"background": 0, "organ": 1}}
    (dataset / "dataset.json").write_text(json.dumps(dataset_json))
    label = np.zeros((6, 6, 3), dtype=np.uint8)
    label[2:4, 2:4, 1] = 1
    nib.save(nib.Nifti1Image(label, np.eye(4)), references / "case.nii.gz")
    elsewhere = tmp_path / "labels_copy"
    elsewhere.mkdir()
    nib.save(nib.Nifti1Image(label, np.eye(4)), elsewhere / "case.nii.gz")
    for argv, message in [(["-ref", str(references), "-pred", str(references)], "lies inside SAMDG_raw="),
                          (["-ref", str(elsewhere), "-pred", str(references)], "lies inside SAMDG_raw="),
                          (["-ref", str(elsewhere), "-pred", str(tmp_path), "-o", str(tmp_path)],
                           "contains the input folder")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("samdg: error: -o ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in references.iterdir()) == ["case.nii.gz"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["case.nii.gz"]
