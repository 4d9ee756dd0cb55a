"""`samdg_benchmark --prompt gt-box`: the oracle benchmark with boxes from the reference labels (tiny dataset)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from samdg.cli import benchmark
from samdg.inference.box_prompts import ORACLE_LABEL

DATASET = "Dataset953_GtBoxSynth"
RUN = ["-d", "953", "--protocol", "single-source", "--sources", "siteA", "--epochs", "1", "--iters-per-epoch", "1",
       "--device", "cpu", "--override", "training.augmentation=none", "--override", "training.num_workers=0",
       "-np", "1", "--disable-progress-bar", "--prompt", "gt-box"]


@pytest.fixture
def dataset(samdg_roots):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess

    make_synthetic_dataset(samdg_roots["raw"] / DATASET, num_domains=2, cases_per_domain=1, test_cases_per_domain=1,
                           shape=(32, 32, 6))
    plan_and_preprocess(DATASET, variant="tiny_vit_test", progress=False, log=lambda message: None)
    return samdg_roots


def test_gt_box_benchmark_of_sam_and_dbsam_is_labelled_oracle_and_empty_where_the_reference_is(dataset, capsys):
    assert benchmark.main(["-m", "sam,dbsam", *RUN]) == 0
    printed = capsys.readouterr().out
    out = dataset["results"] / DATASET / "benchmark__sam+dbsam__single-source__gt-box"
    assert ORACLE_LABEL in printed
    assert ORACLE_LABEL in (out / "comparison.md").read_text(encoding="utf-8").splitlines()[0]
    raw = dataset["raw"] / DATASET
    for method in ("sam", "dbsam"):
        folder = dataset["results"] / DATASET / f"benchmark__{method}__single-source__gt-box"
        assert ORACLE_LABEL in (folder / "matrix.md").read_text(encoding="utf-8").splitlines()[0]
        for table in ("matrix.csv", "cells.csv"):  # a CSV copied out of the folder still says it is the oracle
            assert set(pd.read_csv(folder / table)["prompts"]) == {ORACLE_LABEL}, table
        result = json.loads((folder / "benchmark.json").read_text(encoding="utf-8"))
        assert result["settings"]["prompt"] == "gt-box" and result["notes"][0].startswith("Prompts: " + ORACLE_LABEL)
        predictions = folder / "predictions" / "src-siteA"
        assert json.loads((predictions / "prediction.json").read_text(encoding="utf-8"))["prompt"] == ORACLE_LABEL
        for case in ("synth_siteA_001", "synth_siteB_001"):
            predicted = np.asarray(nib.load(predictions / f"{case}.nii.gz").dataobj)
            reference = np.asarray(nib.load(raw / "labelsTs" / f"{case}.nii.gz").dataobj)
            # the oracle prompts class k only in the slices where the reference has it: no predicted voxel of k
            # lies in a slice (along the plan's slicing axis) without reference k
            axis = _sliced_axis(predictions, case)
            in_slice = tuple(a for a in range(3) if a != axis)
            for value in (1, 2, 3):
                predicted_slices = (predicted == value).any(axis=in_slice)
                assert not (predicted_slices & ~(reference == value).any(axis=in_slice)).any(), (method, case, value)
            assert predicted.any(), "the boxes prompt something"
    # the trained models are the automatic ones: the automatic benchmark reuses them
    assert benchmark.main(["-m", "sam", *RUN[:-2]]) == 0
    automatic = json.loads((dataset["results"] / DATASET / "benchmark__sam__single-source" / "benchmark.json")
                           .read_text(encoding="utf-8"))
    assert [m["status"] for m in automatic["models"]] == ["reused"] and ORACLE_LABEL not in capsys.readouterr().out
    automatic_csv = pd.read_csv(dataset["results"] / DATASET / "benchmark__sam__single-source" / "matrix.csv")
    assert set(automatic_csv["prompts"]) == {"automatic"}


def _sliced_axis(prediction_dir, case) -> int:
    """The file axis of ``case`` along which the model's plan slices (canonical Z = RAS S)."""
    plans = json.loads((prediction_dir / "plans.json").read_text(encoding="utf-8"))
    canonical = plans["transpose_forward"][0]
    image = prediction_dir / f"{case}.nii.gz"
    ornt = nib.orientations.io_orientation(nib.load(image).affine)
    return int(next(a for a, (ras, _) in enumerate(ornt) if int(ras) == 2 - canonical))


@pytest.mark.parametrize("method", ["dapsam", "nnunet"])
def test_gt_box_with_a_method_without_a_prompt_encoder_is_one_line_before_training(dataset, capsys, method):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["-m", f"sam,{method}", *RUN])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"method '{method}' has no box-prompted mode" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((dataset["results"] / DATASET).glob("*__samdgPlans__2d")), "nothing was trained"
