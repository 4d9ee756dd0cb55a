"""NaN as "no value": a Dice of a label absent from reference and prediction, a distance to an empty mask.

Means skip such values instead of propagating them, and JSON outputs write them as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np


def nan_mean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN; NaN when there is none (any iterable: list, array, dict values)."""
    array = np.fromiter(values, dtype=float)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else float("nan")


def nan_to_none(value: Any) -> Any:
    """A JSON-ready copy of nested dicts/lists/tuples: NaN -> None, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
