"""Markdown rendering of per-domain results."""

import math

import pandas as pd

from samdg.evaluation.aggregate import group_statistics
from samdg.evaluation.report import per_domain_markdown


def _per_case():
    return pd.DataFrame({
        "case": ["a", "b", "c"], "domain": ["CT", "CT", "MR"], "label": ["liver"] * 3,
        "dice": [0.9, 0.7, 0.0], "iou": [0.8, 0.6, 0.0],
        "hd95_mm": [2.0, 4.0, math.nan], "assd_mm": [1.0, 3.0, math.nan],
        "n_ref": [10, 10, 10], "n_pred": [10, 12, 0],
    })


def test_table_shows_mean_std_counts_and_dashes_for_undefined_values():
    per_case = _per_case()
    table = per_domain_markdown(group_statistics(per_case, ["domain", "label"]), metrics=("dice", "hd95_mm"),
                                pooled=group_statistics(per_case, ["label"]))
    lines = table.splitlines()
    assert lines[0] == "| domain | label | n | Dice | HD95 (mm) | missed | false positive |"
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| CT | liver | 2 | 0.800 ± 0.141 | 3.00 ± 1.41 | 0 | 0 |"
    assert lines[3] == "| MR | liver | 1 | 0.000 | – | 1 | 0 |"  # one case: no std; missed organ: no distance
    assert lines[4] == "| (all cases) | liver | 3 | 0.533 ± 0.473 | 3.00 ± 1.41 | 1 | 0 |"
