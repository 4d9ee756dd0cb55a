"""Content checks of a raw dataset: every problem at once, each naming its file, before anything is written.

:func:`load_raw_dataset` lists the files (scanned from imagesTr/labelsTr, or taken from dataset.json's ``dataset``
map) and records listing problems (misnamed or unmatched files, missing channels or labels, a case in both the
training cases and imagesTs, cases missing from the ``domains`` map). Only ``Case`` paths are read here. This module
adds what needs the voxels: unreadable, empty or 4D files, NaN/inf intensities, label values that dataset.json
does not declare, and channels or labels whose grid (shape, spacing, origin, direction) differs from the case's
first channel, image files whose channel count (grey or RGB) differs from the rest of the dataset, and blank
(constant) images whose label holds foreground. Every image is read in full, in a thread pool (decompression and
numpy release the GIL).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samdg.dataset.raw import Case, RawDataset
from samdg.errors import SamdgError
from samdg.imageio import Geometry, read_image, read_label

TOLERANCE = 1e-3  # relative (and absolute, in mm) tolerance on spacing, origin and direction


@dataclass
class IntegrityReport:
    """``errors`` stop planning; ``warnings`` are worth a look but harmless (e.g. unused domain-map entries)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _close(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                            rtol=TOLERANCE, atol=TOLERANCE))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + ")"


def grid_differences(geometry: Geometry, reference: Geometry) -> list[str]:
    """What differs between two grids: shape exactly; spacing, origin and direction beyond the tolerance."""
    if geometry.is_2d != reference.is_2d:
        return ["one is a 2D image, the other a 3D volume"]
    differences = []
    if tuple(geometry.original_shape) != tuple(reference.original_shape):
        differences.append(f"shape {tuple(geometry.original_shape)} vs {tuple(reference.original_shape)}")
    if not _close(geometry.spacing, reference.spacing):
        differences.append(f"spacing {_fmt(geometry.spacing)} vs {_fmt(reference.spacing)}")
    affine, reference_affine = np.asarray(geometry.original_affine), np.asarray(reference.original_affine)
    if not _close(affine[:3, 3], reference_affine[:3, 3]):
        differences.append(f"origin {_fmt(affine[:3, 3])} vs {_fmt(reference_affine[:3, 3])}")
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    reference_direction = reference_affine[:3, :3] / np.linalg.norm(reference_affine[:3, :3], axis=0)
    if not _close(direction, reference_direction):
        differences.append(f"direction {_fmt(direction)} vs {_fmt(reference_direction)}")
    if not differences and not geometry.same_grid(reference, TOLERANCE):
        differences.append("voxel-to-world matrix")
    return differences


@dataclass
class _ImageFacts:
    geometry: Geometry
    num_channels: int  # 3 for an RGB 2D file, else 1
    constant: bool  # every voxel has the same intensity


def _check_image(path: str, errors: list[str]) -> _ImageFacts | None:
    """Read one channel file fully; report read failures and non-finite voxels."""
    try:
        array, geometry = read_image(path)
    except SamdgError as error:
        errors.append(str(error))
        return None
    except Exception as error:  # a damaged file must become a message, never a traceback
        errors.append(f"{path}: cannot be read ({type(error).__name__}: {error})")
        return None
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        errors.append(f"{path}: contains {n_nan} NaN and {n_inf} infinite voxel(s)")
        return _ImageFacts(geometry, int(array.shape[0]), constant=False)
    return _ImageFacts(geometry, int(array.shape[0]), constant=bool(array.min() == array.max()))


def _check_label(path: str, declared: set[int], background_values: set[int],
                 errors: list[str]) -> tuple[Geometry, bool] | None:
    """-> (Geometry, whether the label holds foreground: a value other than background and ignore) or None."""
    try:
        label, geometry = read_label(path)
    except SamdgError as error:
        errors.append(str(error))
        return None
    except Exception as error:
        errors.append(f"{path}: cannot be read ({type(error).__name__}: {error})")
        return None
    present = set(np.unique(label).tolist())
    undeclared = sorted(present - declared)
    if undeclared:
        errors.append(
            f"{path}: label value(s) {', '.join(map(str, undeclared))} not declared in dataset.json 'labels' "
            f"(declared: {', '.join(map(str, sorted(declared)))})"
        )
    return geometry, bool(present - background_values)


@dataclass
class _CaseFindings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    channels_per_file: dict[str, int] = field(default_factory=dict)


def _inspect_case(case: Case, declared_labels: set[int], background_values: set[int]) -> _CaseFindings:
    """All content problems of one case (channels and label), each naming the file."""
    findings = _CaseFindings()
    errors = findings.errors
    reference_path, reference = None, None
    constant_files, readable_files = [], 0
    for path in case.image_paths:
        if not Path(path).is_file():
            continue  # the listing already reported the missing channel
        facts = _check_image(path, errors)
        if facts is None:
            continue
        readable_files += 1
        findings.channels_per_file[path] = facts.num_channels
        if facts.constant:
            constant_files.append(path)
        if reference is None:
            reference_path, reference = path, facts.geometry
            continue
        differences = grid_differences(facts.geometry, reference)
        if differences:
            errors.append(f"{path}: grid differs from channel file {reference_path}: {'; '.join(differences)}")
    if case.label_path and Path(case.label_path).is_file():
        checked = _check_label(case.label_path, declared_labels, background_values, errors)
        if checked is not None:
            geometry, has_foreground = checked
            if reference is not None:
                differences = grid_differences(geometry, reference)
                if differences:
                    errors.append(f"{case.label_path}: label grid differs from image {reference_path}: "
                                  f"{'; '.join(differences)}")
            if has_foreground and constant_files:
                # Nothing in a blank image shows where the labelled structures are: almost always a failed export.
                # One blank channel among informative ones may be a deliberately zero-filled missing sequence.
                problems = errors if len(constant_files) == readable_files else findings.warnings
                for path in constant_files:
                    problems.append(f"{path}: image has one constant intensity everywhere, but its label "
                                    f"{case.label_path} holds foreground")
    return findings


def _mixed_channel_counts(findings: list[_CaseFindings]) -> list[str]:
    """Image files whose channel count (grey 1, RGB 3) differs from that of most of the dataset's image files."""
    counts = [n for f in findings for n in f.channels_per_file.values()]
    if len(set(counts)) <= 1:
        return []
    usual = max(sorted(set(counts)), key=counts.count)
    kind = {1: "grey (1 channel)", 3: "RGB (3 channels)"}
    usual_kind = kind.get(usual, f"{usual}-channel")
    return [f"{path}: is {kind.get(n, f'{n}-channel')} while the dataset's other images are {usual_kind}; "
            "convert it so that every image has the same channels"
            for f in findings for path, n in f.channels_per_file.items() if n != usual]


def _domain_map_problems(raw: RawDataset, report: IntegrityReport) -> None:
    """Values must be non-empty strings; entries naming no case are only a warning (missing cases: the listing)."""
    if not raw.has_domain_map:
        return
    json_path = raw.folder / "dataset.json"
    domain_map = raw.json["domains"]
    bad = sorted(str(k) for k, v in domain_map.items() if not isinstance(v, str) or not v.strip())
    if bad:
        report.errors.append(f"{json_path}: 'domains' entries must be non-empty domain names; "
                             f"not so for {', '.join(bad)}")
    known = set(raw.training_cases) | set(raw.test_cases)
    unknown = sorted(str(k) for k in domain_map if k not in known)
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        report.warnings.append(f"{json_path}: 'domains' names {len(unknown)} case(s) that have no image: {shown}")


def integrity_report(raw: RawDataset, num_workers: int | None = None) -> IntegrityReport:
    """Check every file of ``raw``; listing problems come first, then per-case content problems in case order."""
    report = IntegrityReport(errors=list(raw.problems))
    _domain_map_problems(raw, report)
    spec = raw.labels
    declared = set(spec.label_values)
    background = {0} if spec.ignore_label is None else {0, spec.ignore_label}
    cases = [*raw.training_cases.values(), *raw.test_cases.values()]
    workers = num_workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(cases) > 1:
        with ThreadPoolExecutor(workers) as pool:
            per_case = list(pool.map(lambda case: _inspect_case(case, declared, background), cases))
    else:
        per_case = [_inspect_case(case, declared, background) for case in cases]
    for findings in per_case:
        report.errors.extend(findings.errors)
        report.warnings.extend(findings.warnings)
    report.errors.extend(_mixed_channel_counts(per_case))
    return report


def verify_dataset(raw: RawDataset, num_workers: int | None = None) -> list[str]:
    """All problems (errors) of a raw dataset, each naming the file; empty when the dataset is usable."""
    return integrity_report(raw, num_workers).errors


def check_integrity_or_raise(raw: RawDataset, num_workers: int | None = None) -> None:
    """Print warnings to stderr; raise one SamdgError listing every problem, one per line."""
    report = integrity_report(raw, num_workers)
    for warning in report.warnings:
        print(f"samdg: warning: {warning}", file=sys.stderr)
    if report.errors:
        lines = "\n".join(f"  {error}" for error in report.errors)
        raise SamdgError(f"raw dataset {raw.folder} failed the integrity check with {len(report.errors)} "
                         f"problem(s):\n{lines}")
