"""Fingerprint statistics checked against numbers computed independently from the files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from raw_builders import make_ct_dataset, make_mr_dataset, write_dataset_json
from skimage.measure import label as connected_components

from samdg.dataset.raw import load_raw_dataset
from samdg.planning.fingerprint import FINGERPRINT_FILE, compute_fingerprint, load_or_compute_fingerprint


def _canonical(path) -> np.ndarray:
    """Independent reading: nibabel's as_closest_canonical gives (R,A,S); samdg's canonical order is (S,A,R)."""
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj).transpose(2, 1, 0)


@pytest.fixture
def ct_raw(samdg_roots):
    folder = make_ct_dataset(samdg_roots["raw"], num_cases=4,
                             domains={"case0": "siteA", "case1": "siteA", "case2": "siteB", "case3": "siteB"})
    return load_raw_dataset(folder)


def test_per_case_values_match_an_independent_computation(ct_raw):
    fingerprint = compute_fingerprint(ct_raw, num_processes=1, progress=False)
    case = ct_raw.training_cases["case2"]
    image = _canonical(case.image_paths[0]).astype(np.float64)
    label = _canonical(case.label_path)
    record = fingerprint["cases"]["case2"]

    assert record["spacing"] == pytest.approx([2.5, 0.8, 0.8])
    assert record["shape"] == list(image.shape) == [12, 36, 40]
    assert record["orientation"] == "RAS" and record["domain"] == "siteB"
    # CT air is -1000, nonzero everywhere: no cropping
    assert record["shape_after_crop"] == [12, 36, 40]
    stats = record["foreground_intensity_properties_per_channel"]["0"]
    foreground = image[label > 0]
    assert stats["mean"] == pytest.approx(foreground.mean(), rel=1e-6)
    assert stats["std"] == pytest.approx(foreground.std(), rel=1e-6)
    assert stats["median"] == pytest.approx(np.median(foreground))
    assert stats["percentile_00_5"] == pytest.approx(np.quantile(foreground, 0.005))
    assert stats["percentile_99_5"] == pytest.approx(np.quantile(foreground, 0.995))
    assert stats["image_min"] == image.min() and stats["image_max"] == image.max()
    assert record["label_voxel_counts"] == {str(v): int(np.count_nonzero(label == v)) for v in (0, 1, 2)}
    assert record["foreground_fraction"] == pytest.approx(np.count_nonzero(label) / label.size)
    for v in (1, 2):
        assert record["components_per_label"][str(v)] == connected_components(label == v, connectivity=1).max()
    z_fraction = np.mean([label[z].any() for z in range(label.shape[0])])
    assert record["slices_with_foreground_fraction"][0] == pytest.approx(z_fraction)


def test_pooled_and_per_domain_aggregates(ct_raw):
    fingerprint = compute_fingerprint(ct_raw, num_processes=1, progress=False)
    foreground = {}
    for case_id, case in ct_raw.training_cases.items():
        foreground[case_id] = _canonical(case.image_paths[0])[_canonical(case.label_path) > 0].astype(np.float64)
    pooled = np.concatenate([foreground[c] for c in sorted(foreground)])
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == pytest.approx(pooled.mean(), rel=1e-6)
    assert stats["percentile_99_5"] == pytest.approx(np.quantile(pooled, 0.995))
    assert fingerprint["pooled"]["num_cases"] == 4
    assert set(fingerprint["per_domain"]) == {"siteA", "siteB"}
    site_b = np.concatenate([foreground["case2"], foreground["case3"]])
    b_stats = fingerprint["per_domain"]["siteB"]["foreground_intensity_properties_per_channel"]["0"]
    assert b_stats["mean"] == pytest.approx(site_b.mean(), rel=1e-6)
    assert fingerprint["per_domain"]["siteB"]["num_cases"] == 2
    assert fingerprint["modalities"] == ["CT"] and fingerprint["is_2d"] is False
    assert fingerprint["spacings"] == [[2.5, pytest.approx(0.8), pytest.approx(0.8)]] * 4
    assert fingerprint["pooled"]["labels"]["2"]["cases_present"] == 4


def test_cropping_orientation_and_parallel_extraction(samdg_roots):
    raw = load_raw_dataset(make_mr_dataset(samdg_roots["raw"], num_cases=3))
    serial = compute_fingerprint(raw, num_processes=1, progress=False)
    parallel = compute_fingerprint(raw, num_processes=2, progress=False)
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)
    assert [serial["cases"][c]["orientation"] for c in ("mr0", "mr1", "mr2")] == ["RAS", "LPS", "LAS"]
    for case_id, case in raw.training_cases.items():
        image = np.stack([_canonical(p) for p in case.image_paths])
        nonzero = np.argwhere(np.any(image != 0, axis=0))
        expected = (nonzero.max(axis=0) - nonzero.min(axis=0) + 1).tolist()
        assert serial["cases"][case_id]["shape_after_crop"] == expected
    assert serial["median_relative_size_after_cropping"] < 1.0
    assert serial["modalities"] == ["MR", "MR"]


def test_ignore_label_is_not_foreground(samdg_roots):
    folder = make_ct_dataset(samdg_roots["raw"], num_cases=1)
    meta = json.loads((folder / "dataset.json").read_text())
    # relabel the bone (2) as 'ignore' (must be the highest value)
    write_dataset_json(folder, meta["channel_names"], {"background": 0, "organ": 1, "ignore": 2}, ".nii.gz", 1)
    raw = load_raw_dataset(folder)
    record = compute_fingerprint(raw, progress=False)["cases"]["case0"]
    label = _canonical(folder / "labelsTr" / "case0.nii.gz")
    assert record["foreground_fraction"] == pytest.approx(np.count_nonzero(label == 1) / label.size)
    assert record["foreground_intensity_properties_per_channel"]["0"]["max"] < 300  # bone (700 HU) excluded


def test_fingerprint_is_reused_unless_stale_or_clean(ct_raw, samdg_roots):
    out = samdg_roots["preprocessed"] / ct_raw.name
    messages = []
    first = load_or_compute_fingerprint(ct_raw, out, progress=False, log=messages.append)
    path = out / FINGERPRINT_FILE
    assert path.is_file() and not messages
    path.write_text(path.read_text().replace('"num_cases": 4', '"num_cases": 4444', 1))  # a marker
    second = load_or_compute_fingerprint(ct_raw, out, progress=False, log=messages.append)
    assert second["pooled"]["num_cases"] == 4444 and "Reusing" in messages[-1]
    third = load_or_compute_fingerprint(ct_raw, out, clean=True, progress=False, log=messages.append)
    assert third["pooled"]["num_cases"] == 4 == first["pooled"]["num_cases"]
    # a removed case makes the stored fingerprint stale
    (ct_raw.folder / "imagesTr" / "case3_0000.nii.gz").unlink()
    (ct_raw.folder / "labelsTr" / "case3.nii.gz").unlink()
    fewer = load_raw_dataset(ct_raw.folder)
    fourth = load_or_compute_fingerprint(fewer, out, progress=False, log=messages.append)
    assert fourth["case_ids"] == ["case0", "case1", "case2"] and "recomputing" in messages[-1]
