"""The samdg_plan_and_preprocess command, end to end on small datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from raw_builders import make_ct_dataset, make_png_dataset
from raw_builders import run_plan_and_preprocess as _run

from samdg.planning.plans import Plans


def test_plans_and_preprocesses_two_datasets(samdg_roots, capsys):
    make_ct_dataset(samdg_roots["raw"], dataset_id=811, num_cases=2)
    make_png_dataset(samdg_roots["raw"], dataset_id=812, rgb=True)
    code, out, err = _run(capsys, "-d", "811", "Dataset812_Fundus", "-np", "1", "--no_pbar", "--gpu-memory-gb", "24",
                          "--override", "training.batch_size=5", "--override", "sam.inplane_crop=[64, 64]")
    assert code == 0, err
    for name, cases in (("Dataset811_CTlike", ["case0", "case1"]), ("Dataset812_Fundus", ["img0", "img1", "img2"])):
        folder = samdg_roots["preprocessed"] / name
        assert {p.name for p in folder.iterdir()} == {"dataset.json", "dataset_fingerprint.json", "samdgPlans.json",
                                                      "samdgPlans_2d"}
        plans = Plans.load(folder / "samdgPlans.json")
        assert plans.training.batch_size == 5 and plans.sam.inplane_crop == [64, 64]
        assert plans.decision("training.batch_size").reason.startswith("set by the user")
        assert sorted(p.stem for p in (folder / "samdgPlans_2d").glob("*.json")) == cases
        assert json.loads((folder / "dataset.json").read_text())["file_ending"] in (".nii.gz", ".png")
    rgb = np.load(samdg_roots["preprocessed"] / "Dataset812_Fundus" / "samdgPlans_2d" / "img0.npy")
    assert rgb.shape == (3, 1, 48, 64)
    for text in ("Plan for Dataset811_CTlike", "ct_clip_scale", "Plan for Dataset812_Fundus", "rgb: [0, 1, 2]",
                 "override         training.batch_size = 5"):
        assert text in out

    code, out, _ = _run(capsys, "-d", "811", "-np", "1", "--no_pbar", "--override", "training.batch_size=5")
    assert code == 0 and "2 of 2 cases already preprocessed with this plan; skipped" in out
    assert "Reusing" in out


def test_verify_only_reports_every_problem_and_writes_nothing(samdg_roots, capsys):
    folder = make_ct_dataset(samdg_roots["raw"], dataset_id=813, num_cases=3)
    (folder / "labelsTr" / "case1.nii.gz").unlink()
    (folder / "imagesTr" / "case2_0001.nii.gz").write_bytes(b"")
    code, out, err = _run(capsys, "-d", "813", "--verify_only")
    assert code == 2
    assert err.startswith("samdg: error:") and "Traceback" not in err
    assert "case1.nii.gz" in err and "case2_0001.nii.gz" in err
    assert not any(samdg_roots["preprocessed"].iterdir())
    # the full run refuses too, before writing anything
    code, _, err = _run(capsys, "-d", "813")
    assert code == 2 and not any(samdg_roots["preprocessed"].iterdir())


def test_verify_only_on_a_clean_dataset(samdg_roots, capsys):
    make_ct_dataset(samdg_roots["raw"], dataset_id=814, num_cases=1)
    code, out, _ = _run(capsys, "-d", "814", "--verify_only")
    assert code == 0 and "integrity check passed" in out
    assert not any(samdg_roots["preprocessed"].iterdir())


@pytest.mark.parametrize("args, message", [
    (["--override", "training.batchsize=3"], "unknown key 'batchsize'; valid keys here: batch_size"),
    (["--override", "nonsense"], "expected key=value"),
    (["--variant", "vit_zz"], "--variant vit_zz: unknown SAM variant"),
    (["-np", "0"], "-np must be at least 1"),
])
def test_argument_errors_are_one_clear_line(samdg_roots, capsys, args, message):
    make_ct_dataset(samdg_roots["raw"], dataset_id=815, num_cases=1)
    code, out, err = _run(capsys, "-d", "815", "--no_pbar", *args)
    assert code == 2 and message in err and "Traceback" not in err
    if "--variant" in args:  # found before the integrity check and the fingerprint
        assert "integrity check passed" not in out
        assert not list(samdg_roots["preprocessed"].rglob("*.json"))


def test_unknown_dataset_id(samdg_roots, capsys):
    code, _, err = _run(capsys, "-d", "999")
    assert code == 2 and "no dataset with id 999" in err


def test_console_script_runs_with_parallel_workers(samdg_roots):
    make_ct_dataset(samdg_roots["raw"], dataset_id=816, num_cases=2)
    command = [sys.executable, "-m", "samdg.cli.plan_and_preprocess", "-d", "816", "-np", "2", "--no_pbar"]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(list((samdg_roots["preprocessed"] / "Dataset816_CTlike" / "samdgPlans_2d").glob("*.json"))) == 2
