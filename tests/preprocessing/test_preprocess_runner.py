"""Preprocessing a whole dataset: storage layout, resuming, re-running on a changed plan, parallel workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from raw_builders import make_ct_dataset

from samdg.dataset.raw import load_raw_dataset
from samdg.planning.fingerprint import compute_fingerprint
from samdg.planning.planner import plan_experiment
from samdg.planning.plans import apply_overrides
from samdg.preprocessing.runner import preprocess_dataset


@pytest.fixture
def setup(samdg_roots):
    raw = load_raw_dataset(make_ct_dataset(samdg_roots["raw"], num_cases=3,
                                           domains={"case0": "A", "case1": "A", "case2": "B"}))
    plans = plan_experiment(compute_fingerprint(raw, progress=False), raw.json, gpu_memory_gb=24)
    plans = apply_overrides(plans, {"target_spacing": [2.5, 1.0, 1.0]})
    return raw, plans, samdg_roots["preprocessed"] / raw.name


def test_layout_and_properties(setup):
    raw, plans, out = setup
    result = preprocess_dataset(raw, plans, out, progress=False, log=lambda m: None)
    folder = out / "samdgPlans_2d"
    assert result["processed"] == ["case0", "case1", "case2"] and result["folder"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"case{i}{suffix}" for i in range(3) for suffix in (".npy", "_seg.npy", ".json"))
    data = np.load(folder / "case2.npy")
    seg = np.load(folder / "case2_seg.npy")
    properties = json.loads((folder / "case2.json").read_text())
    assert data.dtype == np.float32 and data.shape == (1, 12, 29, 32) and 0 <= data.min() and data.max() <= 1
    assert seg.dtype == np.int16 and seg.shape == (1, 12, 29, 32) and set(np.unique(seg)) <= {0, 1, 2}
    assert properties["case_id"] == "case2" and properties["domain"] == "B"
    for key in ("geometry", "shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_before_resampling",
                "spacing_transposed", "slices_with_label", "plans_hash"):
        assert key in properties
    assert properties["plans_hash"] == plans.preprocessing_hash()
    assert set(properties["slices_with_label"]) == {"1", "2"}
    for value, slices in properties["slices_with_label"].items():
        assert slices == [s for s in range(seg.shape[1]) if (seg[0, s] == int(value)).any()]


def test_rerun_skips_finished_cases_and_redoes_interrupted_ones(setup):
    raw, plans, out = setup
    preprocess_dataset(raw, plans, out, progress=False, log=lambda m: None)
    folder = out / "samdgPlans_2d"
    # simulate a run killed while writing case1: arrays present, properties missing, a temp file left behind
    (folder / "case1.json").unlink()
    (folder / ".case1.npy.abc123.npy").write_bytes(b"partial")
    stamp = (folder / "case0.npy").stat().st_mtime_ns
    messages = []
    result = preprocess_dataset(raw, plans, out, progress=False, log=messages.append)
    assert result["processed"] == ["case1"] and result["skipped"] == ["case0", "case2"]
    assert (folder / "case0.npy").stat().st_mtime_ns == stamp
    assert (folder / "case1.json").is_file() and not list(folder.glob(".*"))
    assert "2 of 3 cases already preprocessed" in messages[0]


def test_changed_plan_reprocesses_every_case(setup):
    raw, plans, out = setup
    preprocess_dataset(raw, plans, out, progress=False, log=lambda m: None)
    training_only = apply_overrides(plans, {"training.batch_size": 3})
    assert preprocess_dataset(raw, training_only, out, progress=False, log=lambda m: None)["processed"] == []
    coarser = apply_overrides(plans, {"target_spacing": [2.5, 2.0, 2.0]})
    result = preprocess_dataset(raw, coarser, out, progress=False, log=lambda m: None)
    assert result["processed"] == ["case0", "case1", "case2"]
    assert np.load(out / "samdgPlans_2d" / "case0.npy").shape == (1, 12, 14, 16)


def test_parallel_workers_give_the_same_arrays(setup, tmp_path):
    raw, plans, out = setup
    preprocess_dataset(raw, plans, out, num_processes=1, progress=False, log=lambda m: None)
    other = tmp_path / "parallel"
    result = preprocess_dataset(raw, plans, other, num_processes=2, progress=False, log=lambda m: None)
    assert result["processed"] == ["case0", "case1", "case2"]
    for name in ("case0.npy", "case1_seg.npy", "case2.npy"):
        assert np.array_equal(np.load(out / "samdgPlans_2d" / name), np.load(other / "samdgPlans_2d" / name))
