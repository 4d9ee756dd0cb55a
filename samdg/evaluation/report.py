"""Human-readable tables of evaluation results (Markdown, pasteable into a README, an issue or a paper draft)."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)",
                 "paper_dice_fg_slices": "Dice fg slices (paper)", "paper_dice_per_image": "Dice per image (paper)"}


def format_mean_std(mean: float, std: float, digits: int) -> str:
    """``0.912 ± 0.031``; ``–`` when the mean is undefined, the mean alone when the std is."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def per_domain_markdown(per_domain: pd.DataFrame, metrics: Sequence[str] = ("dice", "iou", "hd95_mm", "assd_mm"),
                        pooled: pd.DataFrame | None = None, pooled_name: str = "(all cases)") -> str:
    """Render per_domain.csv rows as a Markdown table: domain | label | n | metric mean ± std ... | missed | FP.

    Args:
        per_domain: the per-domain frame (columns domain, label, n_cases, ``<metric>_mean``, ``<metric>_std``,
            n_missed, n_false_positive), as written to per_domain.csv.
        metrics: which metrics to show, in order. Distances (``*_mm``) get 2 decimals, the others 3.
        pooled: optional frame of the same columns without ``domain`` (all cases together), appended at the end
            with ``pooled_name`` in the domain column.
    """
    frame = per_domain
    if pooled is not None:
        frame = pd.concat([per_domain, pooled.assign(domain=pooled_name)], ignore_index=True)
    header = ["domain", "label", "n", *(METRIC_TITLES.get(m, m) for m in metrics), "missed", "false positive"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in frame.to_dict("records"):
        cells = [str(row["domain"]), str(row["label"]), str(int(row["n_cases"]))]
        for metric in metrics:
            digits = 2 if metric.endswith("_mm") else 3
            cells.append(format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], digits))
        cells += [str(int(row["n_missed"])), str(int(row["n_false_positive"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
