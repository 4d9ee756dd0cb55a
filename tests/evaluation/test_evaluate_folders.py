"""evaluate_arrays / evaluate_folders: labels, regions, ignore label, domains, pairing, errors and output files."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from samdg.errors import SamdgError
from samdg.evaluation.evaluate import evaluate_arrays, evaluate_folders
from samdg.evaluation.inputs import setup_from_dataset_json
from samdg.labels import LabelSpec


def test_regions_are_unions_of_their_label_values():
    spec = LabelSpec.from_dataset_json({"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2])
    reference = np.zeros((1, 2, 4), dtype=np.int16)
    reference[0, 0] = [1, 1, 2, 2]
    prediction = np.zeros_like(reference)
    prediction[0, 0] = [0, 2, 2, 0]
    prediction[0, 1, 0] = 1
    metrics = evaluate_arrays(reference, prediction, (999.0, 1.0, 1.0), spec)
    # whole = {1,2}: reference 4 pixels, prediction 3, 2 shared -> Dice 4/7; core = {2}: ref 2, pred 2, 1 shared
    assert set(metrics) == {"(1, 2)", "2"}
    assert metrics["(1, 2)"]["dice"] == pytest.approx(4 / 7)
    assert metrics["2"]["dice"] == pytest.approx(0.5)
    assert metrics["2"]["iou"] == pytest.approx(1 / 3)


def test_ignore_label_voxels_count_nowhere():
    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "ignore": 9})
    reference = np.zeros((3, 6, 6), dtype=np.int16)
    reference[1, 1:3, 1:3] = 1
    reference[:, :, 4:] = 9  # unannotated columns
    prediction = np.zeros_like(reference)
    prediction[1, 1:3, 1:3] = 1
    prediction[:, :, 5] = 1  # predicted where nobody annotated: not a false positive
    metrics = evaluate_arrays(reference, prediction, (2.0, 1.0, 1.0), spec)["1"]
    assert metrics["dice"] == 1.0 and metrics["fp"] == 0 and metrics["hd95_mm"] == 0.0
    assert metrics["n_pred"] == 4 and metrics["tn"] == 3 * 6 * 4 - 4
    without_ignore = LabelSpec.from_dataset_json({"background": 0, "organ": 1})
    assert evaluate_arrays(reference, prediction, (2.0, 1.0, 1.0), without_ignore)["1"]["fp"] == 18


def test_two_domain_evaluation_writes_hand_checked_tables(two_domain_folders, tmp_path):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    output = tmp_path / "out"
    summary = evaluate_folders(reference_dir, prediction_dir, spec, dataset_json["domains"], output, num_processes=1,
                               progress=False)

    per_case = pd.read_csv(output / "per_case.csv")
    assert list(per_case.columns[:9]) == [
        "case", "domain", "label", "dice", "iou", "hd95_mm", "assd_mm", "n_ref", "n_pred"]
    assert len(per_case) == 6
    row = per_case[(per_case.case == "ct_2") & (per_case.label == "liver")].iloc[0]
    assert (row.domain, row.n_ref, row.n_pred) == ("CT", 27, 27)
    assert row.dice == pytest.approx(2 / 3, abs=1e-5) and row.iou == pytest.approx(0.5)
    assert row.hd95_mm == pytest.approx(3.0) and row.assd_mm == pytest.approx(14 / 13, abs=1e-5)
    missed = per_case[(per_case.case == "ct_2") & (per_case.label == "spleen")].iloc[0]
    assert missed.dice == 0 and math.isnan(missed.hd95_mm) and missed.n_pred == 0

    per_domain = pd.read_csv(output / "per_domain.csv")
    assert list(per_domain.columns[:11]) == [
        "domain", "label", "n_cases", "dice_mean", "dice_std", "iou_mean", "iou_std",
        "hd95_mm_mean", "hd95_mm_std", "assd_mm_mean", "assd_mm_std"]
    ct_liver = per_domain[(per_domain.domain == "CT") & (per_domain.label == "liver")].iloc[0]
    assert ct_liver.n_cases == 2
    assert ct_liver.dice_mean == pytest.approx(5 / 6, abs=1e-5)
    assert ct_liver.dice_std == pytest.approx((1 / 3) / math.sqrt(2), abs=1e-5)
    assert ct_liver.hd95_mm_mean == pytest.approx(1.5)
    ct_spleen = per_domain[(per_domain.domain == "CT") & (per_domain.label == "spleen")].iloc[0]
    assert (ct_spleen.n_missed, ct_spleen.n_valid_surface, ct_spleen.hd95_mm_mean) == (1, 1, 0.0)
    assert math.isnan(ct_spleen.hd95_mm_std)
    mr_spleen = per_domain[(per_domain.domain == "MR") & (per_domain.label == "spleen")].iloc[0]
    assert (mr_spleen.n_false_positive, mr_spleen.dice_mean) == (1, 0.0)

    on_disk = json.loads((output / "summary.json").read_text())
    assert on_disk == summary
    assert summary["labels"] == {"1": "liver", "2": "spleen"}
    assert summary["mean"]["1"]["Dice"] == pytest.approx(8 / 9)
    assert summary["mean"]["2"]["Dice"] == pytest.approx(1 / 3)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(11 / 18)
    assert summary["foreground_mean"]["HD95_mm"] == pytest.approx(0.5)
    assert summary["counts"]["2"] == {"n_cases": 3, "n_valid_dice": 3, "n_valid_surface": 1, "n_both_empty": 0,
                                      "n_missed": 1, "n_false_positive": 1}
    assert summary["per_domain"]["CT"]["mean"]["1"]["Dice"] == pytest.approx(5 / 6)
    assert summary["per_domain"]["MR"]["mean"]["2"]["HD95_mm"] is None  # NaN is written as null
    assert summary["domain_balanced_mean"]["mean"]["1"]["Dice"] == pytest.approx(11 / 12)
    assert summary["domain_balanced_mean"]["mean"]["2"]["Dice"] == pytest.approx(0.25)
    first = summary["metric_per_case"][0]
    assert first["case"] == "ct_1" and first["domain"] == "CT" and first["reference_file"].endswith("ct_1.nii.gz")
    assert first["metrics"]["1"]["Dice"] == 1.0 and first["metrics"]["1"]["n_ref"] == 27


def test_process_pool_gives_the_same_results(two_domain_folders, tmp_path):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    serial = evaluate_folders(reference_dir, prediction_dir, spec, {}, tmp_path / "a", num_processes=1, progress=False)
    parallel = evaluate_folders(reference_dir, prediction_dir, spec, {}, tmp_path / "b", num_processes=2,
                                progress=False)
    assert serial["metric_per_case"] == parallel["metric_per_case"]
    assert list(serial["per_domain"]) == ["default"]


def test_without_dataset_json_labels_are_the_values_found(two_domain_folders, tmp_path):
    reference_dir, prediction_dir, _ = two_domain_folders
    setup = setup_from_dataset_json(None)
    assert setup.label_spec is None and "no dataset.json" in setup.notes[0]
    summary = evaluate_folders(reference_dir, prediction_dir, None, None, tmp_path / "out", num_processes=1,
                               progress=False)
    assert summary["labels"] == {"1": "1", "2": "2"}
    assert summary["file_ending"] == ".nii.gz"
    assert summary["mean"]["1"]["Dice"] == pytest.approx(8 / 9)


def test_single_slice_png_labels_use_in_plane_distances(tmp_path, png_label_folders):
    reference = np.zeros((7, 7), dtype=np.uint8)
    reference[2:5, 2:5] = 1
    prediction = np.zeros_like(reference)
    prediction[3, 3] = 1
    reference_dir, prediction_dir = png_label_folders({"img": (reference, prediction)})
    spec = LabelSpec.from_dataset_json({"background": 0, "disc": 1})
    summary = evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=1,
                               progress=False)
    # the ring of 8 pixels around the centre: 4 at 1 px, 4 at sqrt(2) px, plus the centre's own 1 px
    assert summary["mean"]["1"]["ASSD_mm"] == pytest.approx((5 + 4 * math.sqrt(2)) / 9)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(2 / 10)


def test_shape_mismatch_names_both_files(two_domain_folders, tmp_path, write_label):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    write_label(prediction_dir / "ct_1.nii.gz", np.zeros((8, 9, 10)), (3.0, 1.0, 1.0))
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    with pytest.raises(SamdgError, match=r"predictions/ct_1\.nii\.gz: shape .*labelsTs/ct_1\.nii\.gz"):
        evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=1, progress=False)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_spacing_mismatch_is_an_error(two_domain_folders, tmp_path, write_label):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    write_label(prediction_dir / "mr_1.nii.gz", np.zeros((8, 9, 9)), (2.0, 1.0, 1.0))
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    with pytest.raises(SamdgError, match=r"mr_1\.nii\.gz: spacing"):
        evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=2, progress=False)


def test_origin_mismatch_is_an_error(two_domain_folders, tmp_path, write_label):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    write_label(prediction_dir / "ct_2.nii.gz", np.zeros((8, 9, 9)), (3.0, 1.0, 1.0), origin=(0.0, 0.0, 6.0))
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    with pytest.raises(SamdgError, match=r"ct_2\.nii\.gz: origin or direction differs from the reference"):
        evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=1, progress=False)


def test_missing_predictions_fail_unless_allowed(two_domain_folders, tmp_path):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    (prediction_dir / "ct_2.nii.gz").unlink()
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    with pytest.raises(SamdgError, match=r"1 reference case\(s\) have no prediction: .*ct_2\.nii\.gz"):
        evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=1, progress=False)
    summary = evaluate_folders(reference_dir, prediction_dir, spec, None, tmp_path / "out", num_processes=1,
                               allow_missing=True, progress=False)
    assert summary["skipped"]["missing_prediction"] == ["ct_2"]
    assert [c["case"] for c in summary["metric_per_case"]] == ["ct_1", "mr_1"]


def test_listed_reference_files_evaluate_like_a_reference_folder(two_domain_folders, tmp_path):
    """References named by dataset.json's 'dataset' map live anywhere, under any name (the benchmark passes them)."""
    import shutil

    reference_dir, prediction_dir, dataset_json = two_domain_folders
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = {}
    for index, path in enumerate(sorted(reference_dir.glob("*.nii.gz"))):
        listed[path.name[: -len(".nii.gz")]] = shutil.copy(path, elsewhere / f"label_{index}.nii.gz")
    from_folder = evaluate_folders(reference_dir, prediction_dir, spec, dataset_json["domains"], tmp_path / "a",
                                   num_processes=1, progress=False)
    from_list = evaluate_folders(listed, prediction_dir, spec, dataset_json["domains"], tmp_path / "b",
                                 num_processes=1, file_ending=".nii.gz", progress=False)
    assert from_list["foreground_mean"] == from_folder["foreground_mean"]
    assert pd.read_csv(tmp_path / "b" / "per_case.csv")["case"].tolist() == \
        pd.read_csv(tmp_path / "a" / "per_case.csv")["case"].tolist()
    with pytest.raises(SamdgError, match="file ending"):
        evaluate_folders(listed, prediction_dir, spec, None, tmp_path / "c", num_processes=1, progress=False)
