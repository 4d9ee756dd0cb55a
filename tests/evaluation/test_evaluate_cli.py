"""samdg_evaluate end to end: dataset.json discovery, -d, output files, console table and user errors (exit 2)."""

import json

import numpy as np
import pandas as pd
import pytest

from samdg.cli.evaluate import main


def _run(argv):
    """Run the command; return its exit code (main returns 0 or exits through entry_point)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_dataset_json_in_the_prediction_folder_gives_labels_and_domains(two_domain_folders, tmp_path, capsys):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    (prediction_dir / "dataset.json").write_text(json.dumps(dataset_json))
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1"]) == 0

    per_case = pd.read_csv(prediction_dir / "per_case.csv")
    assert sorted(per_case.domain.unique()) == ["CT", "MR"]
    assert sorted(per_case.label.unique()) == ["liver", "spleen"]
    per_domain = pd.read_csv(prediction_dir / "per_domain.csv")
    assert list(zip(per_domain.domain, per_domain.label)) == [("CT", "liver"), ("CT", "spleen"), ("MR", "liver"),
                                                             ("MR", "spleen")]
    summary = json.loads((prediction_dir / "summary.json").read_text())
    assert summary["dataset_json"] == str(prediction_dir / "dataset.json")
    assert summary["mean"]["1"]["Dice"] == pytest.approx(8 / 9)
    assert set(summary["per_domain"]) == {"CT", "MR"}

    out = capsys.readouterr()
    assert "| CT | liver | 2 | 0.833 ± 0.236 |" in out.out
    assert "| (all cases) | spleen | 3 |" in out.out
    assert f"labels and domains from {prediction_dir / 'dataset.json'}" in out.err


def test_dataset_id_reads_the_raw_dataset_json_and_output_folder(two_domain_folders, tmp_path, samdg_roots, capsys):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    dataset_dir = samdg_roots["raw"] / "Dataset012_Abdomen"
    dataset_dir.mkdir()
    dataset_json["domains"] = {"ct_1": "siteA", "ct_2": "siteB"}  # mr_1 unmapped: goes to 'default', said so
    (dataset_dir / "dataset.json").write_text(json.dumps(dataset_json))
    output = tmp_path / "evaluation"
    argv = ["-ref", str(reference_dir), "-pred", str(prediction_dir), "-d", "12", "-o", str(output), "-np", "1"]
    assert _run(argv) == 0
    assert sorted(p.name for p in output.iterdir()) == ["per_case.csv", "per_domain.csv", "summary.json"]
    assert not (prediction_dir / "summary.json").exists()
    per_domain = pd.read_csv(output / "per_domain.csv")
    assert sorted(per_domain.domain.unique()) == ["default", "siteA", "siteB"]
    assert per_domain[(per_domain.domain == "siteB") & (per_domain.label == "spleen")].n_missed.item() == 1
    assert "1 case(s) are not in the 'domains' map" in capsys.readouterr().err


def test_no_dataset_json_anywhere_is_said_and_uses_one_domain(two_domain_folders, capsys):
    reference_dir, prediction_dir, _ = two_domain_folders
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1"]) == 0
    assert "no dataset.json found" in capsys.readouterr().err
    per_domain = pd.read_csv(prediction_dir / "per_domain.csv", keep_default_na=False)
    assert per_domain.domain.tolist() == ["default", "default"]


def test_shape_mismatch_exits_2_naming_the_file(two_domain_folders, capsys, write_label):
    reference_dir, prediction_dir, _ = two_domain_folders
    write_label(prediction_dir / "mr_1.nii.gz", np.zeros((7, 9, 9)), (3.0, 1.0, 1.0))
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "2"]) == 2
    err = capsys.readouterr().err
    assert "samdg: error: " in err and "mr_1.nii.gz: shape (7, 9, 9)" in err
    assert "Traceback" not in err


def test_missing_prediction_exits_2_and_allow_missing_skips_it(two_domain_folders, capsys):
    reference_dir, prediction_dir, _ = two_domain_folders
    (prediction_dir / "ct_1.nii.gz").unlink()
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1"]) == 2
    err = capsys.readouterr().err
    assert "have no prediction" in err and str(prediction_dir / "ct_1.nii.gz") in err
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1", "--allow-missing"]) == 0
    assert "skipped 1 reference case(s) without a prediction: ct_1" in capsys.readouterr().err
    assert len(pd.read_csv(prediction_dir / "per_case.csv")) == 4


def test_unknown_dataset_id_exits_2(two_domain_folders, samdg_roots, capsys):
    reference_dir, prediction_dir, _ = two_domain_folders
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-d", "99"]) == 2
    assert "no dataset with id 99" in capsys.readouterr().err


def test_missing_folder_exits_2_saying_which(two_domain_folders, tmp_path, capsys):
    reference_dir, _, _ = two_domain_folders
    assert _run(["-ref", str(reference_dir), "-pred", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: prediction (-pred) folder not found" in capsys.readouterr().err


def test_a_label_value_dataset_json_does_not_declare_exits_2(two_domain_folders, capsys, write_label):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    (prediction_dir / "dataset.json").write_text(json.dumps(dataset_json))
    volume = np.zeros((8, 9, 9))
    volume[1, 1, 1] = 7  # would silently count as background
    write_label(prediction_dir / "mr_1.nii.gz", volume, (3.0, 1.0, 1.0))
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1"]) == 2
    err = capsys.readouterr().err
    assert (f"{prediction_dir / 'mr_1.nii.gz'}: label value(s) 7 not declared in the dataset's labels "
            "(declared: 0, 1, 2)") in err


def test_an_output_folder_that_is_a_file_exits_2(two_domain_folders, tmp_path, capsys):
    reference_dir, prediction_dir, _ = two_domain_folders
    (tmp_path / "out").write_text("a file")
    output = str(tmp_path / "out")
    assert _run(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-np", "1", "-o", output]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out'}: is a file, not a folder" in err and "Traceback" not in err
