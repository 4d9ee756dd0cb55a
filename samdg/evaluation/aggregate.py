"""From per-case results to the three outputs: per-case table, per-domain table and the summary.json dict.

Means skip NaN (a label absent from both reference and prediction has no Dice; a missing mask has no distance).
Standard deviations are sample standard deviations (ddof=1) over the non-NaN values, NaN for fewer than two.
The schema of summary.json is described in documentation/evaluation.md.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from samdg.evaluation.metrics import METRIC_NAMES
from samdg.evaluation.paper_metrics import PAPER_METRIC_NAMES
from samdg.labels import LabelSpec
from samdg.utils.nan import nan_mean, nan_to_none

PER_CASE_COLUMNS = (
    "case", "domain", "label", "dice", "iou", "hd95_mm", "assd_mm", "n_ref", "n_pred", "tp", "fp", "fn", "tn",
)
COUNT_COLUMNS = ("n_valid_dice", "n_valid_surface", "n_both_empty", "n_missed", "n_false_positive")
# summary.json uses nnU-Net's metric names where they exist, so scripts written for nnU-Net summaries keep working
SUMMARY_NAMES = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95_mm", "assd_mm": "ASSD_mm", "tp": "TP", "fp": "FP",
                 "fn": "FN", "tn": "TN", "n_ref": "n_ref", "n_pred": "n_pred",
                 **{name: name for name in PAPER_METRIC_NAMES}}


def label_key(values: tuple[int, ...]) -> str:
    """nnU-Net's summary.json key of a label (``"1"``) or region (``"(1, 2)"``)."""
    return str(values[0]) if len(values) == 1 else str(tuple(values))


def per_case_frame(case_results: Iterable[dict], spec: LabelSpec, domains: dict[str, str],
                   default_domain: str) -> pd.DataFrame:
    """One row per case and class with the columns of ``PER_CASE_COLUMNS`` (label = the class name), then the
    ``paper_*`` columns when the cases were evaluated with the papers' metrics."""
    case_results = list(case_results)
    paper = [m for m in PAPER_METRIC_NAMES
             if any(m in per_label for r in case_results for per_label in r["metrics"].values())]
    columns = [*PER_CASE_COLUMNS, *paper]
    rows = []
    for result in case_results:
        domain = domains.get(result["case"], default_domain)
        for name, values in zip(spec.names, spec.classes):
            metrics = result["metrics"][label_key(values)]
            values = {column: metrics[column] for column in columns[3:]}
            rows.append({"case": result["case"], "domain": domain, "label": name, **values})
    return pd.DataFrame(rows, columns=columns)


def metric_columns(per_case: pd.DataFrame) -> list[str]:
    """The metrics of a per-case frame: the whole-volume ones, then any ``paper_*`` ones it holds."""
    return [*METRIC_NAMES, *(m for m in PAPER_METRIC_NAMES if m in per_case.columns)]


def group_statistics(per_case: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean/std of each metric and the empty-mask counts per group (``by`` e.g. ["domain", "label"]).

    Columns: ``*by``, n_cases, ``<metric>_mean``, ``<metric>_std`` for dice, iou, hd95_mm, assd_mm, then the counts
    n_valid_dice, n_valid_surface, n_both_empty, n_missed, n_false_positive, then mean and std of any ``paper_*``
    metric of the frame. Groups keep first-seen order.
    """
    metrics = metric_columns(per_case)
    paper = metrics[len(METRIC_NAMES):]
    rows = []
    for keys, group in per_case.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row: dict[str, Any] = dict(zip(by, keys))
        row["n_cases"] = len(group)
        for metric in metrics:  # the frame's ``columns`` below set the column order
            values = group[metric].to_numpy(dtype=float)
            row[f"{metric}_mean"] = nan_mean(values)
            row[f"{metric}_std"] = _nanstd(values)
        row.update(_empty_counts(group))
        rows.append(row)
    columns = [*by, "n_cases", *(f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")), *COUNT_COLUMNS,
               *(f"{m}_{s}" for m in paper for s in ("mean", "std"))]
    return pd.DataFrame(rows, columns=columns)


def per_domain_frame(per_case: pd.DataFrame) -> pd.DataFrame:
    """per_domain.csv: domains sorted by name, labels in dataset order."""
    ordered = per_case.sort_values("domain", kind="stable")
    return group_statistics(ordered, ["domain", "label"])


def build_summary(per_case: pd.DataFrame, case_results: list[dict], spec: LabelSpec, extra: dict[str, Any]) -> dict:
    """The summary.json dict (NaN becomes null so that the file is strict JSON)."""
    keys = {name: label_key(values) for name, values in zip(spec.names, spec.classes)}
    pooled = _block(per_case, keys)
    groups = sorted(per_case.groupby("domain"), key=lambda item: item[0])
    per_domain = {domain: _block(group, keys) for domain, group in groups}
    domain_mean = {key: {SUMMARY_NAMES[m]: nan_mean([d["mean"][key][SUMMARY_NAMES[m]] for d in per_domain.values()])
                         for m in metric_columns(per_case)} for key in keys.values()}
    by_file = {r["case"]: r for r in case_results}
    domain_of = dict(zip(per_case["case"], per_case["domain"]))
    metric_per_case = [{
        "case": case,
        "domain": domain_of[case],
        "reference_file": by_file[case]["reference_file"],
        "prediction_file": by_file[case]["prediction_file"],
        "metrics": {key: {SUMMARY_NAMES[name]: value for name, value in by_file[case]["metrics"][key].items()}
                    for key in keys.values()},
    } for case in sorted(by_file)]
    summary = {
        "foreground_mean": pooled["foreground_mean"],
        "mean": pooled["mean"],
        "std": pooled["std"],
        "counts": pooled["counts"],
        "labels": {key: name for name, key in keys.items()},
        "per_domain": per_domain,
        "domain_balanced_mean": {"foreground_mean": _foreground_mean(domain_mean), "mean": domain_mean},
        **extra,
        "metric_per_case": metric_per_case,
    }
    return nan_to_none(summary)


def _block(per_case: pd.DataFrame, keys: dict[str, str]) -> dict[str, Any]:
    """foreground_mean / mean / std / counts over the rows of one group of cases (all cases or one domain)."""
    mean, std, counts = {}, {}, {}
    paper = metric_columns(per_case)[len(METRIC_NAMES):]
    for name, key in keys.items():
        rows = per_case[per_case["label"] == name]
        mean[key] = {SUMMARY_NAMES[c]: nan_mean(rows[c].to_numpy(dtype=float)) for c in [*PER_CASE_COLUMNS[3:], *paper]}
        std[key] = {SUMMARY_NAMES[m]: _nanstd(rows[m].to_numpy(dtype=float)) for m in [*METRIC_NAMES, *paper]}
        counts[key] = {"n_cases": len(rows), **_empty_counts(rows)}
    return {"foreground_mean": _foreground_mean(mean), "mean": mean, "std": std, "counts": counts}


def _foreground_mean(mean: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over labels of the per-label means, skipping labels whose mean is NaN (unlike nnU-Net's np.mean)."""
    names = [SUMMARY_NAMES[m] for m in (*METRIC_NAMES, *PAPER_METRIC_NAMES)
             if all(SUMMARY_NAMES[m] in per_label for per_label in mean.values())]
    return {name: nan_mean([per_label[name] for per_label in mean.values()]) for name in names}


def _empty_counts(rows: pd.DataFrame) -> dict[str, int]:
    has_ref, has_pred = rows["n_ref"] > 0, rows["n_pred"] > 0
    return {
        "n_valid_dice": int(rows["dice"].notna().sum()),
        "n_valid_surface": int(rows["hd95_mm"].notna().sum()),
        "n_both_empty": int((~has_ref & ~has_pred).sum()),
        "n_missed": int((has_ref & ~has_pred).sum()),
        "n_false_positive": int((~has_ref & has_pred).sum()),
    }


def _nanstd(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")
