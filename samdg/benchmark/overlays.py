"""Overlay PNGs of the best and the worst cross-domain case of every target domain, for a quick visual check.

Each PNG shows one axial slice (the one with the most reference foreground; the most predicted foreground when
the reference is empty) of the case's first image channel, with the reference outlined in green and the
prediction in red, displayed anterior up and patient right on the left (radiological convention; arrays are in
samdg's canonical (S,A,R) order); CT in Hounsfield units is shown with the abdominal window (L40/W400), other
images between their 0.5th and 99.5th percentiles. The title names the model's training domains, the case and its Dice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from samdg.imageio import read_case, read_label
from samdg.utils.files import atomic_path


@dataclass(frozen=True)
class CaseResult:
    """One predicted test case of one model: where its files are and its mean Dice over classes."""

    source: str
    target: str
    case: str
    dice: float
    image_paths: tuple[str, ...]
    reference_file: str
    prediction_file: str


def case_mean_dice(per_case: pd.DataFrame) -> dict[str, float]:
    """per_case.csv frame -> {case: mean Dice over the classes that have one}."""
    return {str(case): float(group["dice"].mean()) for case, group in per_case.groupby("case")}


def pick_best_and_worst(results: Sequence[CaseResult]) -> dict[str, dict[str, CaseResult]]:
    """{target: {"best": result, "worst": result}} over the results with a finite Dice (ties: first in order)."""
    chosen: dict[str, dict[str, CaseResult]] = {}
    for result in results:
        if not np.isfinite(result.dice):
            continue
        entry = chosen.setdefault(result.target, {"best": result, "worst": result})
        if result.dice > entry["best"].dice:
            entry["best"] = result
        if result.dice < entry["worst"].dice:
            entry["worst"] = result
    return chosen


def _display(plane: np.ndarray, is_2d: bool) -> np.ndarray:
    """A canonical (A,R) axial plane -> anterior at the top, patient right on the left; 2D images unchanged."""
    return plane if is_2d else plane[::-1, ::-1]


def overlay_png(result: CaseResult, path: Path, title: str) -> None:
    """Write one overlay PNG (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, geometry = read_case(list(result.image_paths))
    reference, _ = read_label(result.reference_file)
    prediction, _ = read_label(result.prediction_file)
    foreground = (reference > 0).reshape(reference.shape[0], -1).sum(axis=1)
    if not foreground.any():
        foreground = (prediction > 0).reshape(prediction.shape[0], -1).sum(axis=1)
    z = int(np.argmax(foreground)) if foreground.any() else reference.shape[0] // 2
    plane = image[0, z] if image.shape[0] != 3 or not geometry.is_2d else np.moveaxis(image[:, 0], 0, -1)
    low, high = np.percentile(plane, [0.5, 99.5]) if plane.size else (0.0, 1.0)
    if low < -500 and high > 100:  # Hounsfield units: the abdominal soft-tissue window (level 40, width 400)
        low, high = -160.0, 240.0
    shown = np.clip((plane - low) / max(high - low, 1e-6), 0, 1)

    spacing = geometry.spacing
    aspect = plane.shape[0] * spacing[1] / max(plane.shape[1] * spacing[2], 1e-6)
    figure, axis = plt.subplots(figsize=(5, 5 * aspect + 0.6))
    axis.imshow(_display(shown, geometry.is_2d), cmap=None if shown.ndim == 3 else "gray",
                aspect=spacing[1] / spacing[2] if not geometry.is_2d else 1.0, interpolation="nearest")
    for labels, colour in ((reference, "lime"), (prediction, "red")):
        mask = _display(labels[z] > 0, geometry.is_2d)
        if mask.any() and not mask.all():
            axis.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    axis.set_axis_off()
    axis.set_title(f"{title}\n{result.case}: Dice {result.dice:.3f} (slice {z}); green reference, red prediction",
                   fontsize=8)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def write_overlays(results: Sequence[CaseResult], output_dir: Path) -> list[Path]:
    """``<target>_best.png`` and ``<target>_worst.png`` per target domain (cross-domain results only)."""
    written = []
    for target, entry in sorted(pick_best_and_worst(results).items()):
        for which in ("best", "worst"):
            result = entry[which]
            path = output_dir / f"{_safe(target)}_{which}.png"
            overlay_png(result, path, f"{which} case of target {target} (model trained on {result.source})")
            written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-+" else "-" for c in name)
