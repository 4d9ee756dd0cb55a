"""The source x target matrix of a cross-domain benchmark: matrix.csv, cells.csv, matrix.md and matrix.png.

A *cell* is one model (a row: the domains it was trained on) evaluated on the test cases of one target domain (a
column). Its value is the mean over classes of the per-class mean over the target's cases (nnU-Net's
"foreground mean"; NaN cases, e.g. HD95 of an empty mask, are left out of the per-class mean). A cell is
*in-domain* when the target is one of the row's training domains (the diagonal of a single-source matrix) and
*cross-domain* otherwise. The averages never mix the two:

- column ``mean over targets (excl. source)``: mean of the row's cross-domain cells;
- row ``mean over sources (excl. target)``: mean of the column's cross-domain cells;
- their crossing: mean of every cross-domain cell (the benchmark's headline number).

With ``--paper-metrics`` the per-case tables also hold the papers' Dice variants, and the matrix gets one more
table for each (:data:`PAPER_METRICS`), after Dice and HD95; the heatmap keeps Dice and HD95.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from samdg.utils.files import atomic_path, atomic_write_text, make_folder
from samdg.utils.nan import nan_mean

METRICS = {"dice": "Dice", "hd95_mm": "HD95 (mm)"}
PAPER_METRICS = {"paper_dice_fg_slices": "Dice over foreground slices only (papers' protocol, inflated)",
                 "paper_dice_per_image": "Dice per 2D image over foreground images (papers' protocol, inflated)"}
ALL_METRICS = {**METRICS, **PAPER_METRICS}
ROW_MEAN = "mean over targets (excl. source)"
COLUMN_MEAN = "mean over sources (excl. target)"
CELL_COLUMNS = ("source", "target", "metric", "value", "n_cases", "kind")


def cell_values(per_case: pd.DataFrame, source: str, training_domains: Sequence[str]) -> list[dict]:
    """Rows of cells.csv for one model from its per_case.csv frame (columns case, domain, label, dice, hd95_mm...)."""
    rows = []
    metrics = [*METRICS, *(m for m in PAPER_METRICS if m in per_case.columns)]
    for target, group in per_case.groupby("domain", sort=True):
        for metric in metrics:
            per_class = group.groupby("label", sort=False)[metric].mean()  # pandas skips NaN
            value = float(per_class.mean()) if per_class.notna().any() else math.nan
            rows.append({"source": source, "target": str(target), "metric": metric, "value": value,
                         "n_cases": int(group["case"].nunique()),
                         "kind": "in-domain" if target in training_domains else "cross-domain"})
    return rows


def pooled_cross_domain(per_case: pd.DataFrame, training_domains: Sequence[str], metric: str) -> float:
    """One model's mean over all its cross-domain cases pooled, whatever their target (per class, then over
    classes): how the released DeSAM and DAPSAM code averages the unseen sites of one source."""
    cross = per_case[~per_case["domain"].isin(list(training_domains))]
    per_class = cross.groupby("label", sort=False)[metric].mean()
    return float(per_class.mean()) if per_class.notna().any() else math.nan


def metrics_of(cells: pd.DataFrame) -> dict[str, str]:
    """The metrics the cells hold, in table order: Dice, HD95, then any paper metric -> their titles."""
    present = set(cells["metric"])
    return {metric: name for metric, name in ALL_METRICS.items() if metric in METRICS or metric in present}


def matrix_frame(cells: pd.DataFrame, metric: str, sources: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """Wide matrix of one metric: rows ``sources`` + the mean row, columns ``targets`` + the mean column."""
    chosen = cells[cells["metric"] == metric]
    values = chosen.pivot_table(index="source", columns="target", values="value", aggfunc="first", dropna=False)
    values = values.reindex(index=list(sources), columns=list(targets))
    cross = chosen[chosen["kind"] == "cross-domain"].pivot_table(index="source", columns="target", values="value",
                                                                 aggfunc="first", dropna=False)
    cross = cross.reindex(index=list(sources), columns=list(targets))
    frame = values.copy()
    frame[ROW_MEAN] = cross.mean(axis=1, skipna=True)
    mean_row = cross.mean(axis=0, skipna=True).to_dict()
    cross_values = cross.to_numpy(dtype=float)
    mean_row[ROW_MEAN] = nan_mean(cross_values.ravel())
    frame.loc[COLUMN_MEAN] = pd.Series(mean_row)
    frame.index.name = "source"
    return frame


def in_domain_mask(cells: pd.DataFrame, sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """(len(sources), len(targets)) bool: which cells are in-domain."""
    kinds = cells.drop_duplicates(["source", "target"]).set_index(["source", "target"])["kind"]
    return np.array([[kinds.get((s, t), "") == "in-domain" for t in targets] for s in sources])


def _format(value: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if metric == "hd95_mm" else f"{value:.3f}"


def markdown(cells: pd.DataFrame, sources: Sequence[str], targets: Sequence[str], title: str,
             notes: Sequence[str]) -> str:
    """matrix.md: one table per metric; in-domain cells in parentheses; the averages named in the header."""
    lines = [f"# {title}", "", *notes, "",
             "Rows: the domains a model was trained on. Columns: the target domain whose test cases were predicted. "
             "Each cell is the mean over classes of the per-class mean over the target's cases. In-domain cells "
             "(the target was a training domain) are in parentheses and are left out of both averages.", ""]
    mask = in_domain_mask(cells, sources, targets)
    for metric, name in metrics_of(cells).items():
        frame = matrix_frame(cells, metric, sources, targets)
        header = ["source \\ target", *targets, ROW_MEAN]
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for i, source in enumerate([*sources, COLUMN_MEAN]):
            cells_text = []
            for j, target in enumerate([*targets, ROW_MEAN]):
                text = _format(frame.loc[source, target], metric)
                if i < len(sources) and j < len(targets) and mask[i, j] and text != "–":
                    text = f"({text})"
                cells_text.append(text)
            label = f"**{source}**" if source == COLUMN_MEAN else source
            lines.append(f"| {label} | " + " | ".join(cells_text) + " |")
        lines.append("")
    return "\n".join(lines)


def write_matrix_csv(path: Path, cells: pd.DataFrame, sources: Sequence[str], targets: Sequence[str],
                     prompts: str = "automatic") -> None:
    """matrix.csv: for each metric, one row per source plus the mean row; columns metric, source, targets, mean,
    prompts (how the models were prompted, so that an oracle table stays labelled wherever it is copied)."""
    frames = []
    for metric in metrics_of(cells):
        frame = matrix_frame(cells, metric, sources, targets).reset_index()
        frame.insert(0, "metric", metric)
        frame["prompts"] = prompts
        frames.append(frame)
    with atomic_path(path) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, na_rep="NaN", float_format="%.6g")


def heatmap(path: Path, cells: pd.DataFrame, sources: Sequence[str], targets: Sequence[str], title: str) -> None:
    """matrix.png: a Dice and an HD95 heatmap side by side; in-domain cells outlined, values printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    mask = in_domain_mask(cells, sources, targets)
    width = 2.0 + 1.1 * len(targets)
    figure, axes = plt.subplots(1, 2, figsize=(2 * width, 1.6 + 0.6 * len(sources)), squeeze=False)
    for axis, (metric, name) in zip(axes[0], METRICS.items()):
        values = matrix_frame(cells, metric, sources, targets).loc[list(sources), list(targets)].to_numpy(dtype=float)
        cmap = plt.get_cmap("viridis" if metric == "dice" else "viridis_r").with_extremes(bad="lightgrey")
        limits = (0.0, 1.0) if metric == "dice" else (0.0, np.nanmax(values) if np.isfinite(values).any() else 1.0)
        image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=limits[0], vmax=max(limits[1], 1e-6))
        for i in range(len(sources)):
            for j in range(len(targets)):
                axis.text(j, i, _format(values[i, j], metric), ha="center", va="center", fontsize=8,
                          color="white" if np.isfinite(values[i, j]) else "black")
                if mask[i, j]:
                    axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
        axis.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
        axis.set_yticks(range(len(sources)), sources)
        axis.set_xlabel("target domain")
        axis.set_ylabel("trained on")
        axis.set_title(name)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(f"{title}\n(outlined: in-domain)", fontsize=10)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def write_all(output_dir: Path, cells: pd.DataFrame, sources: Sequence[str], targets: Sequence[str], title: str,
              notes: Sequence[str] = (), prompts: str = "automatic") -> dict[str, Path]:
    """Write cells.csv, matrix.csv, matrix.md and matrix.png into ``output_dir``; return their paths by kind.
    ``prompts`` (e.g. "ground-truth box prompts (oracle)") becomes a column of both CSV files."""
    make_folder(output_dir)
    files = {"cells": output_dir / "cells.csv", "csv": output_dir / "matrix.csv", "markdown": output_dir / "matrix.md",
             "heatmap": output_dir / "matrix.png"}
    with atomic_path(files["cells"]) as tmp:
        cells.loc[:, list(CELL_COLUMNS)].assign(prompts=prompts).to_csv(tmp, index=False, na_rep="NaN",
                                                                         float_format="%.6g")
    write_matrix_csv(files["csv"], cells, sources, targets, prompts)
    atomic_write_text(files["markdown"], markdown(cells, sources, targets, title, notes))
    heatmap(files["heatmap"], cells, sources, targets, title)
    return files
