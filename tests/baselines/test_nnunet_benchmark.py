"""The nnU-Net baseline end to end on the CPU: the real nnU-Net (one epoch of 2 iterations) on a tiny synthetic
dataset, next to sam, through ``samdg_benchmark -m sam,nnunet``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nnunetv2")

from samdg.baselines.nnunet import TRAINER, selected_cases, workspace, write_splits  # noqa: E402
from samdg.benchmark.comparison import CROSS_MEAN, IN_MEAN  # noqa: E402
from samdg.benchmark.matrix import ROW_MEAN  # noqa: E402
from samdg.cli import benchmark  # noqa: E402
from samdg.dataset.raw import load_raw_dataset  # noqa: E402
from samdg.training.splits import fold_cases  # noqa: E402

DATASET = "Dataset961_NnunetSynth"
SHORT = ["--epochs", "1", "--iters-per-epoch", "2", "--device", "cpu", "-np", "1", "--disable-progress-bar"]
SAM_ONLY = ["--override", "training.augmentation=none", "--override", "training.num_workers=0"]


def _geometry(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _nnunet_split(samdg_roots, monkeypatch, space, fold):
    """(train, val) case ids as nnU-Net's own trainer reads them from its preprocessed folder."""
    import torch

    from samdg.baselines.nnunet_trainers.nnUNetTrainer_samdg import nnUNetTrainer_samdg

    for key, value in space.environment({}).items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)
    plans = json.loads((space.preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((space.preprocessed / "dataset.json").read_text())
    trainer = nnUNetTrainer_samdg(plans, "2d", fold, dataset_json, torch.device("cpu"))
    train, val = trainer.do_split()
    return sorted(train), sorted(val)


def test_benchmark_runs_nnunet_beside_sam_on_samdgs_cases_and_reuses_it(samdg_roots, monkeypatch, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # augmentation in the training process: 2 cores, tiny data
    make_synthetic_dataset(samdg_roots["raw"] / DATASET, num_domains=2, cases_per_domain=5, test_cases_per_domain=1,
                           shape=(32, 32, 6))
    plan_and_preprocess(DATASET, variant="tiny_vit_test", progress=False, log=lambda message: None)

    arguments = ["-d", "961", "--protocol", "single-source", "--sources", "siteA", *SHORT]
    assert benchmark.main(["-m", "sam,nnunet", *arguments, *SAM_ONLY]) == 0
    printed = capsys.readouterr().out
    assert "ignored" in printed  # the sam-only overrides are said not to apply to nnU-Net

    # one combined table with a row per method
    combined = samdg_roots["results"] / DATASET / "benchmark__sam+nnunet__single-source"
    table = pd.read_csv(combined / "comparison.csv")
    assert list(table.columns) == ["metric", "method", "siteA", "siteB", CROSS_MEAN, IN_MEAN]
    assert list(zip(table["metric"], table["method"])) == [(m, x) for m in ("dice", "hd95_mm")
                                                            for x in ("sam", "nnunet")]
    assert "| nnunet |" in (combined / "comparison.md").read_text()

    # nnU-Net's matrix holds its row, scored by samdg's evaluator, with the heatmap and overlays
    out = samdg_roots["results"] / DATASET / "benchmark__nnunet__single-source"
    matrix = pd.read_csv(out / "matrix.csv")
    dice = matrix[matrix["metric"] == "dice"].set_index("source")
    assert np.isfinite(dice.loc["siteA", ["siteA", "siteB", ROW_MEAN]].astype(float)).all()
    nnunet_row = table[(table["metric"] == "dice") & (table["method"] == "nnunet")].iloc[0]
    assert np.isclose(nnunet_row["siteB"], dice.loc["siteA", "siteB"])
    per_case = pd.read_csv(out / "predictions" / "src-siteA" / "evaluation_Ts" / "per_case.csv")
    assert set(per_case["domain"]) == {"siteA", "siteB"}
    for name in ("matrix.png", "overlays/siteB_best.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # predictions keep the geometry of the images they were made from
    raw = load_raw_dataset(samdg_roots["raw"] / DATASET)
    for case in raw.test_cases.values():
        prediction = out / "predictions" / "src-siteA" / f"{case.case_id}{raw.file_ending}"
        assert _geometry(prediction) == _geometry(case.image_paths[0])

    # nnU-Net trained on exactly samdg's cases of the source domain: fold 'all' = every siteA training case
    space = workspace(DATASET, ["siteA"])
    siteA = sorted(selected_cases(raw, ["siteA"]))
    assert (space.fold_dir("2d", "all") / "checkpoint_final.pth").is_file()
    assert space.model_dir("2d").name == f"{TRAINER}__nnUNetPlans__2d"
    assert _nnunet_split(samdg_roots, monkeypatch, space, "all") == (siteA, siteA)
    # and a numbered fold is samdg's split, read by nnU-Net from splits_final.json
    write_splits(space, DATASET, selected_cases(raw, ["siteA"]), "0", ["siteA"])
    samdg_split = fold_cases(samdg_roots["preprocessed"] / DATASET, {c: "siteA" for c in siteA}, 0, ["siteA"])
    assert _nnunet_split(samdg_roots, monkeypatch, space, 0) == samdg_split

    # a rerun reuses the model and the predictions
    capsys.readouterr()
    assert benchmark.main(["-m", "nnunet", *arguments]) == 0
    again = json.loads((out / "benchmark.json").read_text())
    assert [(m["status"], m["predicted"], m["skipped"]) for m in again["models"]] == [("reused", 0, 2)]


def test_a_numbered_fold_without_samdgs_split_is_refused_before_anything_is_written(samdg_roots, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.cli import train

    make_synthetic_dataset(samdg_roots["raw"] / "Dataset963_NnunetFold", num_domains=2, cases_per_domain=1,
                           test_cases_per_domain=0, shape=(16, 16, 4))
    with pytest.raises(SystemExit):
        train.main(["963", "nnunet", "0", "--device", "cpu"])
    assert "run samdg_plan_and_preprocess" in capsys.readouterr().err
    assert not (samdg_roots["results"] / "Dataset963_NnunetFold").exists()
