"""NaN-aware helpers shared by evaluation and training validation (samdg.utils.nan)."""

import json
import math

import numpy as np

from samdg.utils.nan import nan_mean, nan_to_none


def test_nan_mean_skips_nan_and_takes_any_iterable():
    assert nan_mean([1.0, float("nan"), 3.0]) == 2.0
    assert nan_mean({"liver": 0.5, "spleen": float("nan")}.values()) == 0.5
    assert nan_mean(np.array([0.25, 0.75], dtype=np.float32)) == 0.5
    assert math.isnan(nan_mean([float("nan")])) and math.isnan(nan_mean([]))


def test_nan_to_none_makes_strict_json():
    summary = {"mean": {"1": np.float32(0.5), "2": float("nan")}, "n": np.int64(3), "cases": ("a", float("nan"))}
    cleaned = nan_to_none(summary)
    assert cleaned == {"mean": {"1": 0.5, "2": None}, "n": 3, "cases": ["a", None]}
    json.dumps(cleaned, allow_nan=False)
