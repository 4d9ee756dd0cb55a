"""A tiny single-source benchmark on CPU: 2 synthetic domains, one tiny model per domain, 1 training iteration each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from samdg.benchmark import BenchmarkSettings, run_benchmark
from samdg.benchmark.matrix import COLUMN_MEAN, ROW_MEAN
from samdg.cli import benchmark
from samdg.errors import SamdgError

DATASET = "Dataset951_BenchSynth"
TRAINING = ["--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu", "--override", "training.augmentation=none",
            "--override", "training.num_workers=0", "-np", "1", "--disable-progress-bar"]


def _foreground_mean(per_case: pd.DataFrame, domain: str, metric: str) -> float:
    rows = per_case[per_case["domain"] == domain]
    return float(rows.groupby("label")[metric].mean().mean())


def test_single_source_benchmark_writes_the_matrix_and_overlays_then_reuses_everything(samdg_roots, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess

    make_synthetic_dataset(samdg_roots["raw"] / DATASET, num_domains=2, cases_per_domain=2, test_cases_per_domain=1,
                           shape=(32, 32, 6))
    plan_and_preprocess(DATASET, variant="tiny_vit_test", progress=False, log=lambda message: None)

    assert benchmark.main(["-d", "951", "-m", "sam", "--protocol", "single-source", *TRAINING]) == 0
    printed = capsys.readouterr().out
    assert "## Dice" in printed and ROW_MEAN in printed

    out = samdg_roots["results"] / DATASET / "benchmark__sam__single-source"
    result = json.loads((out / "benchmark.json").read_text())
    assert [m["status"] for m in result["models"]] == ["trained", "trained"]
    assert [m["training_domains"] for m in result["models"]] == [["siteA"], ["siteB"]]

    matrix = pd.read_csv(out / "matrix.csv")
    assert list(matrix.columns) == ["metric", "source", "siteA", "siteB", ROW_MEAN, "prompts"]
    assert list(zip(matrix["metric"], matrix["source"])) == [
        (m, s) for m in ("dice", "hd95_mm") for s in ("siteA", "siteB", COLUMN_MEAN)]
    dice = matrix[matrix["metric"] == "dice"].set_index("source")
    # each cell is the evaluation of that model's predictions of the target's test case
    for source in ("siteA", "siteB"):
        per_case = pd.read_csv(out / "predictions" / f"src-{source}" / "evaluation_Ts" / "per_case.csv")
        for target in ("siteA", "siteB"):
            assert np.isclose(dice.loc[source, target], _foreground_mean(per_case, target, "dice"), atol=1e-5)
    # the averages leave the in-domain diagonal out
    assert np.isclose(dice.loc["siteA", ROW_MEAN], dice.loc["siteA", "siteB"])
    assert np.isclose(dice.loc[COLUMN_MEAN, "siteA"], dice.loc["siteB", "siteA"])
    assert np.isclose(dice.loc[COLUMN_MEAN, ROW_MEAN], (dice.loc["siteA", "siteB"] + dice.loc["siteB", "siteA"]) / 2)
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells[cells["source"] == cells["target"]]["kind"]) == {"in-domain"}
    assert set(cells[cells["source"] != cells["target"]]["kind"]) == {"cross-domain"}

    assert "(" in (out / "matrix.md").read_text()  # in-domain cells are marked
    for name in ("matrix.png", "overlays/siteA_best.png", "overlays/siteA_worst.png", "overlays/siteB_best.png",
                 "overlays/siteB_worst.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # a rerun with the same plan trains nothing and predicts nothing again (data-loading workers do not matter)
    same_model = {"training.augmentation": "none"}
    again = run_benchmark(BenchmarkSettings(dataset="951", method="sam", protocol="single-source", device="cpu",
                                            overrides=same_model, num_processes=1, progress=False),
                          log=lambda message: None)
    assert [(m["status"], m["predicted"], m["skipped"]) for m in again["models"]] == [("reused", 0, 2)] * 2
    assert again["headline"]["dice_cross_domain_mean"] == result["headline"]["dice_cross_domain_mean"]

    # a model trained from another plan is never reported as this call's model
    for other in ({}, {"training.augmentation": "dg_strong"}, {**same_model, "methods.sam.lr": 0.001}):
        with pytest.raises(SamdgError, match="the model there was trained with") as refused:
            run_benchmark(BenchmarkSettings(dataset="951", method="sam", protocol="single-source", device="cpu",
                                            overrides=other, num_processes=1, progress=False),
                          log=lambda message: None)
        assert ("methods.sam.lr" if "methods.sam.lr" in other else "training.augmentation") in str(refused.value)
