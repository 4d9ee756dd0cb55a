"""benchmarks/backbone_speed.py runs end to end in its CPU smoke mode (its figures are not checked here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "backbone_speed.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("backbone_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_writes_json_and_markdown(tmp_path, capsys):
    script = _load_script()
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


def test_without_a_gpu_the_full_run_refuses_politely(tmp_path, capsys, monkeypatch):
    script = _load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main(["--out", str(tmp_path / "speed.json")]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "speed.json").exists()
