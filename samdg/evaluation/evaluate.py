"""Evaluate a folder of predicted label maps against a folder of references, per case, per domain and pooled.

Outputs (written atomically to ``output_dir``): ``per_case.csv``, ``per_domain.csv`` and ``summary.json``.
The metric conventions (whole volumes, surfaces, HD95/ASSD, empty masks) are in :mod:`samdg.evaluation.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from samdg.dataset.raw import DEFAULT_DOMAIN
from samdg.errors import SamdgError
from samdg.evaluation import aggregate
from samdg.evaluation.inputs import check_folders, detect_file_ending, pair_files, reference_files
from samdg.evaluation.metrics import compute_metrics
from samdg.evaluation.paper_metrics import INFLATION_NOTE, compute_paper_metrics
from samdg.labels import LabelSpec
from samdg.utils.files import atomic_path, atomic_write_json
from samdg.utils.pool import run_parallel

PER_CASE_FILE, PER_DOMAIN_FILE, SUMMARY_FILE = "per_case.csv", "per_domain.csv", "summary.json"


def read_pair(reference_file: str | Path,
              prediction_file: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a reference and a prediction label map -> (reference (Z,Y,X), prediction (Z,Y,X), spacing (3,) mm).

    The two must share shape and, within 1e-3 (absolute mm or relative), spacing, origin and direction.
    """
    from samdg.imageio import read_label

    reference, reference_geometry = read_label(reference_file)
    prediction, prediction_geometry = read_label(prediction_file)
    if reference.shape != prediction.shape:
        raise SamdgError(f"{prediction_file}: shape {prediction.shape} differs from the reference {reference_file} "
                         f"{reference.shape}")
    if not np.allclose(reference_geometry.spacing, prediction_geometry.spacing, rtol=1e-3, atol=1e-3):
        raise SamdgError(f"{prediction_file}: spacing {tuple(prediction_geometry.spacing)} differs from the reference "
                         f"{reference_file} {tuple(reference_geometry.spacing)}")
    if not reference_geometry.same_grid(prediction_geometry):
        raise SamdgError(f"{prediction_file}: origin or direction differs from the reference {reference_file}")
    return reference, prediction, tuple(float(s) for s in reference_geometry.spacing)


def evaluate_arrays(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                    spec: LabelSpec, paper_metrics: bool = False) -> dict[str, dict]:
    """Metrics of every class of ``spec`` for one case.

    Args:
        reference, prediction: (Z,Y,X) integer label maps ((1,Y,X) for 2D images).
        spacing: voxel size in mm per array axis.
        spec: classes to evaluate; a region is the union of its label values; voxels where the reference holds the
            ignore label are left out of everything.
        paper_metrics: also the papers' inflated Dice variants (:mod:`samdg.evaluation.paper_metrics`).

    Returns:
        ``{label_key: {dice, iou, hd95_mm, assd_mm, n_ref, n_pred, tp, fp, fn, tn}}`` with nnU-Net's label keys
        (plus ``paper_dice_fg_slices`` and ``paper_dice_per_image`` with ``paper_metrics``).
    """
    valid = None if spec.ignore_label is None else reference != spec.ignore_label
    results = {}
    for values in spec.classes:
        reference_mask = np.isin(reference, values)
        prediction_mask = np.isin(prediction, values)
        results[aggregate.label_key(values)] = compute_metrics(reference_mask, prediction_mask, spacing, valid)
        if paper_metrics:
            results[aggregate.label_key(values)].update(compute_paper_metrics(reference_mask, prediction_mask, valid))
    return results


def evaluate_case(reference_file: str | Path, prediction_file: str | Path, spec: LabelSpec,
                  case: str | None = None, paper_metrics: bool = False) -> dict[str, Any]:
    """Read and evaluate one case -> ``{case, reference_file, prediction_file, spacing, metrics}``.

    A value that ``spec`` does not declare, in either file, is an error: it would silently count as background
    (usually the wrong dataset.json / ``-d``, or a prediction of another model).
    """
    reference, prediction, spacing = read_pair(reference_file, prediction_file)
    for path, array in ((reference_file, reference), (prediction_file, prediction)):
        undeclared = sorted(set(np.unique(array).tolist()) - set(spec.label_values))
        if undeclared:
            raise SamdgError(f"{path}: label value(s) {', '.join(map(str, undeclared))} not declared in the dataset's "
                             f"labels (declared: {', '.join(map(str, spec.label_values))}); is -d / dataset.json "
                             "the right dataset?")
    return {
        "case": case if case is not None else Path(reference_file).name,
        "reference_file": str(reference_file),
        "prediction_file": str(prediction_file),
        "spacing": list(spacing),
        "metrics": evaluate_arrays(reference, prediction, spacing, spec, paper_metrics),
    }


def present_labels(path: str | Path) -> list[int]:
    """Label values other than 0 found in a label file."""
    from samdg.imageio import read_label

    array, _ = read_label(path)
    return [int(v) for v in np.unique(array) if v != 0]


def spec_from_values(values: set[int]) -> LabelSpec:
    """A LabelSpec with one class per value, named by the value (used when no dataset.json exists)."""
    if not values:
        raise SamdgError("no foreground label in any reference or prediction file, and no dataset.json to name labels")
    return LabelSpec.from_dataset_json({"background": 0, **{str(v): int(v) for v in sorted(values)}})


def evaluate_folders(reference_dir: str | Path | dict[str, Path], prediction_dir: str | Path,
                     label_spec: LabelSpec | None = None,
                     domains: dict[str, str] | None = None, output_dir: str | Path | None = None,
                     num_processes: int = 2, file_ending: str | None = None, allow_missing: bool = False,
                     progress: bool = True,
                     extra: dict[str, Any] | None = None, paper_metrics: bool = False) -> dict[str, Any]:
    """Evaluate every reference case that has a prediction; write the three output files; return the summary.

    Args:
        reference_dir, prediction_dir: folders of ``<case><file_ending>`` label maps, paired by case id; or,
            instead of the reference folder, a map case id -> reference file (files listed by dataset.json's
            ``dataset`` map need not live in one folder nor carry the case id in their names).
        label_spec: classes to evaluate; None: one class per value present in any of the files.
        domains: case id -> domain; cases not listed (or all, when None) are in domain ``default``.
        output_dir: where the outputs go (default: ``prediction_dir``).
        num_processes: worker processes for the cases (1 runs in this process).
        file_ending: e.g. ``.nii.gz``; None: detected from the reference folder.
        allow_missing: skip (and report) references without a prediction instead of raising.
        progress: show a tqdm progress bar.
        extra: additional top-level entries for summary.json (e.g. the dataset.json used).
        paper_metrics: add the papers' Dice variants as extra columns (``paper_*``), with a note in summary.json
            that they inflate Dice; the whole-volume metrics are unchanged.

    Returns:
        The summary dict as written to summary.json (schema in documentation/evaluation.md).
    """
    prediction_dir = Path(prediction_dir)
    output_dir = Path(output_dir) if output_dir is not None else prediction_dir
    if num_processes < 1:
        raise SamdgError(f"-np must be at least 1, got {num_processes}")
    if isinstance(reference_dir, dict):
        if file_ending is None:
            raise SamdgError("evaluating listed reference files needs the file ending of the predictions")
        references = reference_dir
        reference_dir = "(listed files)"
    else:
        reference_dir = Path(reference_dir)
        check_folders(reference_dir, prediction_dir)
        file_ending = file_ending or detect_file_ending(reference_dir)
        references = reference_files(reference_dir, file_ending)
    pairing = pair_files(references, prediction_dir, file_ending)
    if pairing.missing_predictions and not allow_missing:
        listing = ", ".join(str(prediction_dir / f"{c}{file_ending}") for c in pairing.missing_predictions[:10])
        more = f" and {len(pairing.missing_predictions) - 10} more" if len(pairing.missing_predictions) > 10 else ""
        raise SamdgError(f"{len(pairing.missing_predictions)} reference case(s) have no prediction: {listing}{more} "
                         "(use --allow-missing to skip them)")
    if not pairing.pairs:
        raise SamdgError(f"{prediction_dir}: no prediction matches a reference in {reference_dir} "
                         f"(ending {file_ending})")

    if label_spec is None:
        files = [path for _, ref, pred in pairing.pairs for path in (ref, pred)]
        found = run_parallel(present_labels, files, num_processes, progress, "reading labels")
        label_spec = spec_from_values({v for values in found for v in values})
    tasks = [(ref, pred, label_spec, case, paper_metrics) for case, ref, pred in pairing.pairs]
    case_results = list(run_parallel(_evaluate_job, tasks, num_processes, progress, "evaluating",
                                     names=[case for case, _, _ in pairing.pairs], ordered=True))

    domains = domains or {}
    per_case = aggregate.per_case_frame(case_results, label_spec, domains, DEFAULT_DOMAIN)
    per_domain = aggregate.per_domain_frame(per_case)
    summary_extra = {
        "reference_folder": str(reference_dir),
        "prediction_folder": str(prediction_dir),
        "file_ending": file_ending,
        "ignore_label": label_spec.ignore_label,
        **(extra or {}),
        **({"paper_metrics_note": INFLATION_NOTE} if paper_metrics else {}),
        "skipped": {"missing_prediction": pairing.missing_predictions,
                    "no_reference": pairing.unreferenced_predictions},
    }
    summary = aggregate.build_summary(per_case, case_results, label_spec, summary_extra)
    write_outputs(output_dir, per_case, per_domain, summary)
    return summary


def write_outputs(output_dir: Path, per_case, per_domain, summary: dict) -> None:
    """per_case.csv, per_domain.csv and summary.json, each written atomically (NaN as ``NaN`` in the CSVs)."""
    for frame, name in ((per_case, PER_CASE_FILE), (per_domain, PER_DOMAIN_FILE)):
        with atomic_path(output_dir / name) as tmp:
            frame.to_csv(tmp, index=False, na_rep="NaN", float_format="%.6g")
    atomic_write_json(output_dir / SUMMARY_FILE, summary)


def _evaluate_job(job: tuple[Path, Path, LabelSpec, str, bool]) -> dict[str, Any]:
    return evaluate_case(*job)
