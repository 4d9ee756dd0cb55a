"""Loading preprocessed cases whose files were damaged after preprocessing: one line naming the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from samdg.errors import SamdgError
from samdg.training.dataset import load_preprocessed_cases

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "planning"))
from raw_builders import make_ct_dataset  # noqa: E402


@pytest.fixture
def preprocessed(samdg_roots):
    from samdg.preprocessing.api import plan_and_preprocess

    make_ct_dataset(samdg_roots["raw"], dataset_id=831, num_cases=2)
    plan_and_preprocess(831, variant="tiny_vit_test", progress=False, log=lambda message: None)
    return samdg_roots["preprocessed"] / "Dataset831_CTlike" / "samdgPlans_2d"


def test_intact_cases_load(preprocessed):
    cases = load_preprocessed_cases(preprocessed)
    assert sorted(cases) == ["case0", "case1"] and cases["case1"].data().shape[0] == 1


@pytest.mark.parametrize("name, damage, problem", [
    ("case1.npy", lambda data: data[: len(data) - 40], "is truncated or damaged"),
    ("case0_seg.npy", lambda data: b"\0" * len(data), "has a damaged header"),
    ("case0.npy", lambda data: data + b"\0" * 8, "is truncated or damaged"),
])
def test_a_damaged_array_is_named_before_training_starts(preprocessed, name, damage, problem):
    path = preprocessed / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SamdgError) as error:
        load_preprocessed_cases(preprocessed)
    message = str(error.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message
    assert "rerun samdg_plan_and_preprocess" in message
