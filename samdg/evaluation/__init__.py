"""Evaluation: metrics per case and label (Dice, IoU, HD95, ASSD in mm), aggregated per domain and pooled.

``metrics`` (pure numpy/scipy on masks), ``inputs`` (dataset.json, file pairing), ``evaluate`` (cases -> files),
``aggregate`` (tables and summary.json), ``report`` (Markdown tables).
"""

from samdg.evaluation.evaluate import evaluate_arrays, evaluate_case, evaluate_folders
from samdg.evaluation.metrics import assd, compute_metrics, dice, hd95, iou, surface, surface_distances

__all__ = ["assd", "compute_metrics", "dice", "evaluate_arrays", "evaluate_case", "evaluate_folders", "hd95", "iou",
           "surface", "surface_distances"]
