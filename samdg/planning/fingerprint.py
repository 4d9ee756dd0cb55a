"""Dataset fingerprint: what the planner needs to know about the data, per case, per domain and pooled.

Per case: spacing, shape, shape after cropping to nonzero, per-channel foreground intensity statistics
(foreground = labelled voxels, as in nnU-Net), the image's own intensity range, label voxel counts, foreground
fraction, connected components per label, the fraction of slices containing foreground along each axis, and the
on-disk orientation. Aggregates (per domain and pooled) use nnU-Net's key names where they overlap
(``spacings``, ``shapes_after_crop``, ``foreground_intensity_properties_per_channel``,
``median_relative_size_after_cropping``). Spacings and shapes are in canonical (Z,Y,X) order.

Dataset-level intensity statistics come from a seeded sample of foreground voxels (at most
``FOREGROUND_SAMPLES_TOTAL`` over the dataset, spread evenly over cases); per-case statistics use every voxel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from samdg.dataset.raw import Case, RawDataset
from samdg.errors import SamdgError
from samdg.imageio import read_case, read_label
from samdg.planning.modality import channel_modalities
from samdg.utils.bounding_box import nonzero_bounding_box
from samdg.utils.files import atomic_write_json, load_json
from samdg.utils.pool import run_parallel

FINGERPRINT_FILE = "dataset_fingerprint.json"
FINGERPRINT_VERSION = 1
FOREGROUND_SAMPLES_TOTAL = 10_000_000
SEED = 1234
PERCENTILES = (0.5, 50.0, 99.5)


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """mean, std, min, max, median and the 0.5/99.5 percentiles (nnU-Net's key names); NaN-free for no values."""
    if values.size == 0:
        return {k: None for k in ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5")}
    values = values.astype(np.float64, copy=False)
    p_low, median, p_high = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()), "median": float(median), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": float(p_low), "percentile_99_5": float(p_high)}


def _components_per_label(label: np.ndarray) -> dict[str, int]:
    """Connected components (face connectivity) of each label, each counted inside its own bounding box."""
    counts = {}
    if label.max(initial=0) <= 0:
        return counts
    for value, box in enumerate(ndimage.find_objects(np.clip(label, 0, None)), start=1):
        if box is not None:
            counts[str(value)] = int(ndimage.label(label[box] == value)[1])
    return counts


def _orientation_code(geometry) -> str:
    if geometry.is_2d:
        return "2D"
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(geometry.original_affine)))


def fingerprint_case(job: tuple[Case, int, int | None]) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    """Fingerprint one case -> (case id, JSON-ready dict, per-channel foreground samples for the aggregates)."""
    case, num_samples, ignore_label = job
    image, geometry = read_case(case.image_paths)
    label = None
    if case.label_path is not None:
        label, label_geometry = read_label(case.label_path)
        if label.shape != image.shape[1:]:
            raise SamdgError(f"{case.label_path}: label shape {label.shape} differs from the image {image.shape[1:]}")
    shape = image.shape[1:]
    box = nonzero_bounding_box(image)
    shape_after_crop = [b - a for a, b in box]
    record: dict[str, Any] = {
        "domain": case.domain,
        "spacing": [float(s) for s in geometry.spacing],
        "shape": [int(s) for s in shape],
        "shape_after_crop": shape_after_crop,
        "bbox_nonzero": box,
        "relative_size_after_cropping": float(np.prod(shape_after_crop) / np.prod(shape)),
        "orientation": _orientation_code(geometry),
        "is_2d": geometry.is_2d,
        "num_channels": int(image.shape[0]),
    }
    rng = np.random.default_rng(SEED)
    foreground = None
    if label is not None:
        foreground = label > 0
        if ignore_label is not None:
            foreground &= label != ignore_label
    samples, channel_stats = [], []
    for c in range(image.shape[0]):
        values = image[c][foreground] if foreground is not None else np.empty(0, np.float32)
        chosen = values if values.size <= num_samples else values[rng.integers(0, values.size, num_samples)]
        samples.append(chosen.astype(np.float32, copy=False))
        stats = intensity_statistics(values)
        stats["image_min"], stats["image_max"] = float(image[c].min()), float(image[c].max())
        channel_stats.append(stats)
    record["foreground_intensity_properties_per_channel"] = {str(c): s for c, s in enumerate(channel_stats)}
    if label is not None:
        values, counts = np.unique(label, return_counts=True)
        record["label_voxel_counts"] = {str(int(v)): int(n) for v, n in zip(values, counts)}
        record["foreground_fraction"] = float(foreground.mean())
        record["components_per_label"] = _components_per_label(label)
        record["slices_with_foreground_fraction"] = [
            float(np.any(foreground, axis=tuple(a for a in range(3) if a != axis)).mean()) for axis in range(3)]
    return case.case_id, record, samples


def aggregate(records: dict[str, dict], samples: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Summaries over a set of cases (a domain, or all of them)."""
    ids = sorted(records)
    spacings = [records[i]["spacing"] for i in ids]
    shapes = [records[i]["shape_after_crop"] for i in ids]
    num_channels = records[ids[0]]["num_channels"]
    intensity = {}
    for c in range(num_channels):
        pooled = np.concatenate([samples[i][c] for i in ids]) if ids else np.empty(0)
        stats = intensity_statistics(pooled)
        stats["image_min"] = float(min(records[i]["foreground_intensity_properties_per_channel"][str(c)]["image_min"]
                                       for i in ids))
        stats["image_max"] = float(max(records[i]["foreground_intensity_properties_per_channel"][str(c)]["image_max"]
                                       for i in ids))
        intensity[str(c)] = stats
    labelled = [i for i in ids if "label_voxel_counts" in records[i]]
    labels: dict[str, dict[str, float]] = {}
    all_values = sorted({int(v) for i in labelled for v in records[i]["label_voxel_counts"] if int(v) != 0})
    for v in all_values:
        key = str(v)
        fractions = [records[i]["label_voxel_counts"].get(key, 0) / np.prod(records[i]["shape"]) for i in labelled]
        components = [records[i]["components_per_label"][key] for i in labelled
                      if key in records[i]["components_per_label"]]
        labels[key] = {"cases_present": len(components), "mean_voxel_fraction": float(np.mean(fractions)),
                       "median_components": float(np.median(components)) if components else 0.0}
    summary = {
        "num_cases": len(ids),
        "spacings": spacings,
        "shapes_after_crop": shapes,
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "median_shape_after_crop": [float(v) for v in np.median(shapes, axis=0)],
        "median_relative_size_after_cropping": float(
            np.median([records[i]["relative_size_after_cropping"] for i in ids])),
        "foreground_intensity_properties_per_channel": intensity,
        "labels": labels,
        "orientations": sorted({records[i]["orientation"] for i in ids}),
    }
    if labelled:
        summary["median_foreground_fraction"] = float(np.median([records[i]["foreground_fraction"] for i in labelled]))
        summary["median_slices_with_foreground_fraction"] = [
            float(v) for v in np.median([records[i]["slices_with_foreground_fraction"] for i in labelled], axis=0)]
    return summary


def compute_fingerprint(raw: RawDataset, num_processes: int = 1, progress: bool = True) -> dict[str, Any]:
    """Fingerprint every training case of ``raw`` -> the dict written to dataset_fingerprint.json."""
    cases = [raw.training_cases[k] for k in sorted(raw.training_cases)]
    per_case_samples = max(1, FOREGROUND_SAMPLES_TOTAL // max(1, len(cases)))
    ignore = raw.labels.ignore_label
    records, samples = {}, {}
    jobs = [(c, per_case_samples, ignore) for c in cases]
    for case_id, record, case_samples in run_parallel(fingerprint_case, jobs, num_processes, progress, "fingerprint",
                                                      names=[c.case_id for c in cases]):
        records[case_id], samples[case_id] = record, case_samples
    records = {k: records[k] for k in sorted(records)}
    channel_counts = {r["num_channels"] for r in records.values()}
    if len(channel_counts) != 1:
        raise SamdgError(f"{raw.folder}: cases have different numbers of image channels ({sorted(channel_counts)})")
    num_channels = channel_counts.pop()
    is_2d = {r["is_2d"] for r in records.values()}
    if len(is_2d) != 1:
        raise SamdgError(f"{raw.folder}: mixes 2D and 3D images")
    domains = sorted({r["domain"] for r in records.values()})
    pooled = aggregate(records, samples)
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "dataset_name": raw.name,
        "channel_names": raw.channel_names,
        "num_channels": num_channels,
        "modalities": channel_modalities(raw.channel_names, num_channels),
        "is_2d": is_2d.pop(),
        "case_ids": list(records),
        # nnU-Net's pooled keys at the top level, for users who know its fingerprint
        "spacings": pooled["spacings"],
        "shapes_after_crop": pooled["shapes_after_crop"],
        "foreground_intensity_properties_per_channel": pooled["foreground_intensity_properties_per_channel"],
        "median_relative_size_after_cropping": pooled["median_relative_size_after_cropping"],
        "pooled": pooled,
        "per_domain": {d: aggregate({k: r for k, r in records.items() if r["domain"] == d}, samples) for d in domains},
        "cases": records,
    }


def load_or_compute_fingerprint(raw: RawDataset, output_folder: str | Path, num_processes: int = 1, clean: bool = False,
                                progress: bool = True, log=print) -> dict[str, Any]:
    """Reuse ``output_folder/dataset_fingerprint.json`` when it covers exactly the current cases, else compute it."""
    path = Path(output_folder) / FINGERPRINT_FILE
    if path.is_file() and not clean:
        existing = load_json(path)
        if (isinstance(existing, dict) and existing.get("fingerprint_version") == FINGERPRINT_VERSION
                and existing.get("case_ids") == sorted(raw.training_cases)
                and existing.get("channel_names") == raw.channel_names):
            domains = {k: raw.training_cases[k].domain for k in raw.training_cases}
            if all(existing["cases"][k]["domain"] == d for k, d in domains.items()):
                log(f"Reusing {path} (pass --clean to recompute)")
                return existing
        log(f"{path} does not match the raw dataset any more; recomputing")
    fingerprint = compute_fingerprint(raw, num_processes, progress)
    atomic_write_json(path, fingerprint)
    return fingerprint
