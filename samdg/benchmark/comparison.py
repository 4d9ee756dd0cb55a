"""Several methods in one benchmark call: one table with a row per method (``comparison.csv``, ``comparison.md``).

Each method keeps its own benchmark folder (matrix, heatmap, overlays, predictions). The comparison reads their
``cells.csv`` and, per metric, gives each method one row: per target domain the mean of its cross-domain cells
(over the models that did not train on that target: the method's ``mean over sources (excl. target)`` row), then
the mean of every cross-domain cell (the method's headline) and the mean of its in-domain cells, so a method that
only fits its sources is visible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from samdg.benchmark.matrix import ALL_METRICS, METRICS
from samdg.evaluation.paper_metrics import INFLATION_NOTE
from samdg.utils.files import atomic_path, atomic_write_text, make_folder

CROSS_MEAN = "cross-domain mean"
IN_MEAN = "in-domain mean"


def comparison_frame(results: Sequence[dict[str, Any]], metric: str) -> pd.DataFrame:
    """Rows: the methods of ``results`` (benchmark.json contents); columns: targets, CROSS_MEAN, IN_MEAN."""
    targets = list(results[0].get("targets") or results[0]["domains"])
    rows = {}
    for result in results:
        cells = pd.read_csv(result["files"]["cells"], keep_default_na=False, na_values=["NaN"],
                            dtype={"source": str, "target": str})
        cells = cells[cells["metric"] == metric]
        cross = cells[cells["kind"] == "cross-domain"]
        row = cross.groupby("target")["value"].mean().reindex(targets).to_dict()
        row[CROSS_MEAN] = float(cross["value"].mean()) if cross["value"].notna().any() else math.nan
        inside = cells[cells["kind"] == "in-domain"]["value"]
        row[IN_MEAN] = float(inside.mean()) if inside.notna().any() else math.nan
        rows[result["settings"]["method"]] = row
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[*targets, CROSS_MEAN, IN_MEAN])
    frame.index.name = "method"
    return frame


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(str(c) for c in frame.columns) + " |"
    lines = [header, "|" + "---|" * (len(frame.columns) + 1)]
    for method, row in frame.iterrows():
        values = ["" if pd.isna(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_comparison(output_dir: Path, results: Sequence[dict[str, Any]], title: str) -> dict[str, Path]:
    """Write comparison.csv (one block per metric) and comparison.md into ``output_dir``; return their paths."""
    make_folder(output_dir)
    files = {"csv": output_dir / "comparison.csv", "markdown": output_dir / "comparison.md"}
    sections = [f"# {title}", "",
                "Per target: mean of the method's cross-domain cells (models that did not train on it). "
                f"`{CROSS_MEAN}`: every cross-domain cell; `{IN_MEAN}`: every in-domain cell.", ""]
    blocks = []
    for metric, name in ALL_METRICS.items():
        frame = comparison_frame(results, metric)
        if metric not in METRICS and frame.isna().all().all():  # paper metrics only with --paper-metrics
            continue
        if metric not in METRICS and INFLATION_NOTE not in sections:
            sections += [INFLATION_NOTE, ""]
        block = frame.reset_index()
        block.insert(0, "metric", metric)
        blocks.append(block)
        sections += [f"## {name}", "", _markdown_table(frame), ""]
    sections += ["Each method's matrix, heatmap and overlays:", ""]
    sections += [f"- {r['settings']['method']}: {Path(r['files']['markdown']).parent}" for r in results]
    with atomic_path(files["csv"]) as temporary:
        pd.concat(blocks, ignore_index=True).to_csv(temporary, index=False, na_rep="NaN", float_format="%.6g")
    atomic_write_text(files["markdown"], "\n".join(sections) + "\n")
    return files
