"""The scripts behind documentation/benchmarks.md run end to end in their CPU smoke modes, so that the one GPU
command (benchmarks/run_gpu_benchmarks.sh) does not fail on a script error. Their figures are not checked here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_script(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # scripts import each other (backbone_cost_model uses backbone_speed)
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_backbone_speed_smoke_mode_writes_json_and_markdown(tmp_path):
    script = _load_script("backbone_speed")
    out = tmp_path / "speed.json"
    assert script.main(["--out", str(out), "--smoke"]) == 0
    results = json.loads(out.read_text())
    assert results["smoke"] is True
    vit = results["forward"][0]
    assert vit["variant"] == "tiny_vit_test" and vit["stock"]["img_per_s"] > 0 and vit["ours"]["img_per_s"] > 0
    assert vit["ours"]["max_abs_diff_vs_stock"] < 1e-4  # same weights, same function
    assert [entry["implementation"] for entry in results["training"]] == [
        "ours", "ours_padded_values", "ours_gradient_checkpointing", "stock"
    ]
    assert all(not entry["oom"] and entry["step_s"] > 0 for entry in results["training"])
    table = out.with_suffix(".md").read_text()
    assert "| tiny_vit_test | 128 px, 2 |" in table and "full fine-tuning step" in table


def test_backbone_speed_without_a_gpu_refuses_politely(tmp_path, capsys, monkeypatch):
    script = _load_script("backbone_speed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main(["--out", str(tmp_path / "speed.json")]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "speed.json").exists()


def test_backbone_cost_model_accounts_for_checkpointing_and_the_stock_attention_maps(tmp_path):
    script = _load_script("backbone_cost_model")
    out = tmp_path / "memory.json"
    assert script.main(["--out", str(out), "--smoke", "--batch", "4"]) == 0
    result = json.loads(out.read_text())
    measured = result["measured"]
    ours, checkpointed, stock = (measured[k]["activations_per_image_gib"]
                                 for k in ("ours", "ours_gradient_checkpointing", "stock"))
    assert 0 < checkpointed < ours  # checkpointing keeps only the block inputs
    assert set(measured["ours"]["per_image_gib_by_part"]) >= {"stem", "block0", "neck"}
    # Same weights, so the same weight copies; the prediction is state + copies + batch x activations.
    assert measured["ours"]["weight_copies_gib"] == pytest.approx(measured["stock"]["weight_copies_gib"])
    expected = result["model_state_gib"] + measured["stock"]["weight_copies_gib"] + 4 * stock
    assert result["predicted_peak_gib"]["stock"] == pytest.approx(expected)
    assert "predicted step peak at batch 4" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("script_name, arguments, figure", [
    ("train_speed", [], "slices_per_second"),
    ("train_speed", ["--augmentation", "none", "--embedding-cache", "memory"], "slices_per_second"),
    ("method_step_speed", ["--method", "desam"], "steps_per_second"),
    ("method_step_speed", ["--method", "dapsam"], "steps_per_second"),
    ("method_step_speed", ["--method", "espmedsam", "--setting", "stage=distill"], "steps_per_second"),
])
def test_training_speed_scripts_run_in_smoke_mode(tmp_path, script_name, arguments, figure):
    script = _load_script(script_name)
    out = tmp_path / "result.json"
    assert script.main(["--out", str(out), "--smoke", *arguments]) == 0
    result = json.loads(out.read_text())
    assert result[figure] > 0
    assert out.with_suffix(".md").read_text().count("|") > 4


def test_predict_speed_times_batched_and_single_slice_runs(tmp_path):
    script = _load_script("predict_speed")
    out = tmp_path / "predict.json"
    assert script.main(["--out", str(out), "--smoke"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["batch_size"] for row in rows] == [8, 1]
    assert all(row["volumes_per_s"] > 0 for row in rows)
