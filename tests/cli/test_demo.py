"""The README's main command, wired end to end (tiny random variant instead of LiteMedSAM, a few iterations)."""

import json

import pandas as pd
import pytest

from samdg.cli.demo import main


def test_demo_runs_the_whole_story_and_a_rerun_reuses_it(samdg_roots, capsys):
    argv = ["--variant", "tiny_tinyvit_test", "--epochs", "1", "--iters-per-epoch", "2", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for step in ("synthetic dataset", "plan and preprocess", "train 'sam' on domain siteA", "predict", "evaluate"):
        assert f"samdg demo: {step}" in out
    predictions = samdg_roots["results"] / "Dataset901_Synthetic" / "demo_predictions__sam__src-siteA"
    per_domain = pd.read_csv(predictions / "per_domain.csv")
    assert set(per_domain["domain"]) == {"siteA", "siteB", "siteC"}
    assert set(per_domain["label"]) == {"liver", "kidney", "spleen"}
    written = sorted(p.name for p in predictions.glob("*.nii.gz"))
    assert written == ["synth_siteA_003.nii.gz", "synth_siteB_003.nii.gz", "synth_siteC_003.nii.gz"]
    # On the CPU the demo trains with the plan's CPU batch (more, smaller steps in the same time).
    fold = samdg_roots["results"] / "Dataset901_Synthetic" / "sam__samdgPlans__2d" / "fold_all__src-siteA"
    plans = json.loads((fold / "plans.json").read_text())
    training_args = json.loads((fold / "training_args.json").read_text())
    assert training_args["global_batch_size"] == plans["training"]["batch_size_cpu"]

    assert main(argv) == 0  # everything is reused: dataset, preprocessing, model, predictions
    assert "reusing" in capsys.readouterr().out


def test_an_unknown_device_is_one_line_before_anything_is_made(samdg_roots, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--device", "tpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "samdg: error: --device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"
    assert not (samdg_roots["raw"] / "Dataset901_Synthetic").exists()
