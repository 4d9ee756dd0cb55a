"""--paper-metrics: the papers' Dice over foreground slices and per-image Dice, against hand-counted values."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from samdg.evaluation.evaluate import evaluate_arrays, evaluate_folders
from samdg.evaluation.paper_metrics import compute_paper_metrics
from samdg.labels import LabelSpec


def volume_with_false_positives_on_empty_slices():
    """(4,4,4) masks. Reference: a 2x2 square on slices 2 and 3 (8 voxels). Prediction: 8 false-positive voxels on
    the empty slice 0, the exact square on slice 2, and on slice 3 half the square plus 6 false positives."""
    reference = np.zeros((4, 4, 4), dtype=bool)
    reference[2:4, 0:2, 0:2] = True
    prediction = np.zeros_like(reference)
    prediction[0, 0:2, :] = True
    prediction[2, 0:2, 0:2] = True
    prediction[3, 0, 0:2] = True
    prediction[3, 2:4, 0:3] = True
    return reference, prediction


def test_foreground_slice_dice_ignores_false_positives_on_empty_slices():
    reference, prediction = volume_with_false_positives_on_empty_slices()
    metrics = compute_paper_metrics(reference, prediction)
    # whole volume: tp 4 + 2 = 6, |ref| 8, |pred| 8 + 4 + 8 = 20 -> 12/28
    # slices 2-3 only: tp 6, |ref| 8, |pred| 4 + 8 = 12 -> 12/20; the 8 voxels on slice 0 are never counted
    assert metrics["paper_dice_fg_slices"] == pytest.approx(0.6)
    # per image: slice 2 -> 1, slice 3 -> 2*2/(4+8) = 1/3 -> mean 2/3
    assert metrics["paper_dice_per_image"] == pytest.approx(2 / 3)
    spec = LabelSpec.from_dataset_json({"background": 0, "prostate": 1})
    both = evaluate_arrays(reference.astype(np.uint8), prediction.astype(np.uint8), (3.0, 1.0, 1.0), spec,
                           paper_metrics=True)["1"]
    assert both["dice"] == pytest.approx(3 / 7)
    assert both["paper_dice_fg_slices"] == pytest.approx(0.6) and both["paper_dice_per_image"] == pytest.approx(2 / 3)
    assert "paper_dice_fg_slices" not in evaluate_arrays(reference.astype(np.uint8), prediction.astype(np.uint8),
                                                         (3.0, 1.0, 1.0), spec)["1"]


def test_a_case_without_the_structure_is_not_scored_by_the_paper_metrics():
    reference = np.zeros((3, 4, 4), dtype=bool)
    prediction = np.zeros_like(reference)
    prediction[1, 1, 1] = True
    metrics = compute_paper_metrics(reference, prediction)
    assert math.isnan(metrics["paper_dice_fg_slices"]) and math.isnan(metrics["paper_dice_per_image"])


def test_ignored_voxels_do_not_make_a_slice_foreground():
    reference = np.zeros((2, 3, 3), dtype=bool)
    reference[0, 0, 0] = reference[1, 1, 1] = True
    prediction = reference.copy()
    prediction[1, 2, 2] = True
    valid = np.ones_like(reference)
    valid[1] = False  # slice 1 unannotated: its reference voxel and its false positive both vanish
    metrics = compute_paper_metrics(reference, prediction, valid)
    assert metrics["paper_dice_fg_slices"] == 1.0 and metrics["paper_dice_per_image"] == 1.0


@pytest.fixture
def two_fundus_images(png_label_folders):
    """Two fundus-like images: one half right, one with no disc in the reference but a predicted one. samdg's Dice
    scores the second 0 (a false positive); the per-image paper Dice never looks at it."""
    disc = np.zeros((6, 6), dtype=np.uint8)
    disc[1:3, 1:3] = 1
    half = np.zeros_like(disc)
    half[1, 1:3] = 1
    half[4, 4:6] = 1
    return png_label_folders({"img_1": (disc, half), "img_2": (np.zeros_like(disc), disc)})


def test_paper_columns_of_a_2d_dataset_beside_the_whole_image_dice(two_fundus_images, tmp_path):
    reference_dir, prediction_dir = two_fundus_images
    output = tmp_path / "out"
    spec = LabelSpec.from_dataset_json({"background": 0, "disc": 1})
    domains = {"img_1": "MESSIDOR_Base1", "img_2": "MESSIDOR_Base1"}
    summary = evaluate_folders(reference_dir, prediction_dir, spec, domains, output, num_processes=1,
                               progress=False, paper_metrics=True)

    per_case = pd.read_csv(output / "per_case.csv", keep_default_na=False, na_values=["NaN"]).set_index("case")
    assert per_case.loc["img_1", "dice"] == pytest.approx(0.5)  # tp 2, |ref| 4, |pred| 4
    assert per_case.loc["img_1", "paper_dice_per_image"] == pytest.approx(0.5)
    assert per_case.loc["img_1", "paper_dice_fg_slices"] == pytest.approx(0.5)
    assert per_case.loc["img_2", "dice"] == 0.0 and math.isnan(per_case.loc["img_2", "paper_dice_per_image"])
    per_domain = pd.read_csv(output / "per_domain.csv").iloc[0]
    assert per_domain["dice_mean"] == pytest.approx(0.25)
    assert per_domain["paper_dice_per_image_mean"] == pytest.approx(0.5)  # the inflation, in one number
    written = json.loads((output / "summary.json").read_text())
    assert written["mean"]["1"]["paper_dice_per_image"] == pytest.approx(0.5)
    assert written["foreground_mean"]["Dice"] == pytest.approx(0.25)
    assert "inflate" in summary["paper_metrics_note"]


def test_without_the_option_the_outputs_are_the_whole_volume_ones(two_domain_folders, tmp_path):
    reference_dir, prediction_dir, dataset_json = two_domain_folders
    spec = LabelSpec.from_dataset_json(dataset_json["labels"])
    summary = evaluate_folders(reference_dir, prediction_dir, spec, dataset_json["domains"], tmp_path / "out",
                               num_processes=1, progress=False)
    columns = set(pd.read_csv(tmp_path / "out" / "per_case.csv").columns)
    columns |= set(pd.read_csv(tmp_path / "out" / "per_domain.csv").columns)
    assert not any(column.startswith("paper_") for column in columns)
    assert "paper_metrics_note" not in summary and "paper_dice_fg_slices" not in summary["foreground_mean"]


def test_samdg_evaluate_prints_the_paper_columns_and_the_inflation_note(two_fundus_images, tmp_path, capsys):
    from samdg.cli import evaluate

    reference_dir, prediction_dir = two_fundus_images
    assert evaluate.main(["-ref", str(reference_dir), "-pred", str(prediction_dir), "-o", str(tmp_path / "out"),
                          "-np", "1", "--paper-metrics"]) == 0
    printed = capsys.readouterr().out
    assert "Dice per image (paper)" in printed and "0.500" in printed and "inflate Dice" in printed
    assert "paper_dice_fg_slices" in pd.read_csv(tmp_path / "out" / "per_case.csv").columns
