"""dataset.json's optional ``dataset`` file map (nnU-Net v2): training cases listed by path instead of scanned."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from samdg.dataset import load_raw_dataset, verify_dataset
from samdg.errors import SamdgError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "planning"))
from raw_builders import ct_case, save_nifti  # noqa: E402

ENV_VAR = "SAMDG_TEST_MAP_ROOT"
CT_LABELS = {"background": 0, "organ": 1, "bone": 2}


def _ct_files(folder: Path, case_id: str, seed: int) -> tuple[Path, Path]:
    image, label = ct_case(np.random.default_rng(seed))
    save_nifti(image, (0.8, 0.8, 2.5), folder / f"{case_id}_img.nii.gz")
    save_nifti(label, (0.8, 0.8, 2.5), folder / f"{case_id}_seg.nii.gz")
    return folder / f"{case_id}_img.nii.gz", folder / f"{case_id}_seg.nii.gz"


def _write_json(folder: Path, file_map, **extra) -> None:
    meta = {"channel_names": {"0": "CT"}, "labels": CT_LABELS, "file_ending": ".nii.gz", "dataset": file_map, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _outside_dataset(raw_root: Path, tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """Dataset900 with no imagesTr: one case by relative path, one absolute, one through $SAMDG_TEST_MAP_ROOT."""
    elsewhere, storage = raw_root / "elsewhere", tmp_path / "storage"
    monkeypatch.setenv(ENV_VAR, str(storage))
    rel_img, rel_seg = _ct_files(elsewhere, "rel", 0)
    abs_img, abs_seg = _ct_files(tmp_path / "absolute", "abs", 1)
    env_img, env_seg = _ct_files(storage / "ct", "env", 2)
    file_map = {
        "rel": {"images": ["../elsewhere/rel_img.nii.gz"], "label": "../elsewhere/rel_seg.nii.gz"},
        "abs": {"images": [str(abs_img)], "label": str(abs_seg)},
        "env": {"images": [f"${ENV_VAR}/ct/env_img.nii.gz"], "label": f"${{{ENV_VAR}}}/ct/env_seg.nii.gz"},
    }
    folder = raw_root / "Dataset900_Elsewhere"
    _write_json(folder, file_map, numTraining=3, domains={"rel": "A", "abs": "B", "env": "B", "t0": "A"})
    expected = {"rel": (rel_img, rel_seg), "abs": (abs_img, abs_seg), "env": (env_img, env_seg)}
    return folder, expected


def test_file_map_lists_cases_stored_anywhere(samdg_roots, tmp_path, monkeypatch):
    folder, expected = _outside_dataset(samdg_roots["raw"], tmp_path, monkeypatch)
    before = json.loads((folder / "dataset.json").read_text())
    save_nifti(np.zeros((4, 4, 2), np.int16), (1, 1, 1), folder / "imagesTs" / "t0_0000.nii.gz")  # still scanned
    raw = load_raw_dataset(folder)
    assert raw.problems == []
    assert sorted(raw.training_cases) == ["abs", "env", "rel"] and list(raw.test_cases) == ["t0"]
    for case_id, (image, label) in expected.items():
        case = raw.training_cases[case_id]
        assert case.image_paths == [str(image)] and case.label_path == str(label)
        assert os.path.isabs(case.label_path) and ".." not in case.label_path
    assert raw.domains == {"rel": "A", "abs": "B", "env": "B", "t0": "A"}
    assert raw.json == before  # the map is copied to the preprocessed folder verbatim, never resolved in place


def test_file_map_replaces_the_imagesTr_scan(samdg_roots, tmp_path, monkeypatch):
    folder, _ = _outside_dataset(samdg_roots["raw"], tmp_path, monkeypatch)
    save_nifti(np.zeros((4, 4, 2), np.int16), (1, 1, 1), folder / "imagesTr" / "stray_0000.nii.gz")
    raw = load_raw_dataset(folder)
    assert "stray" not in raw.training_cases and raw.problems == []


def test_file_level_problems_name_the_file(samdg_roots, tmp_path, monkeypatch):
    monkeypatch.delenv("SAMDG_TEST_UNSET_VAR", raising=False)
    folder = samdg_roots["raw"] / "Dataset901_Broken"
    image, label = _ct_files(tmp_path / "data", "ok", 0)
    other_image, _ = _ct_files(tmp_path / "data", "other", 1)
    file_map = {
        "gone": {"images": ["missing/gone_0000.nii.gz"], "label": "$SAMDG_TEST_UNSET_VAR/gone.nii.gz"},
        "two": {"images": [str(image), str(other_image)], "label": str(label)},  # label shared with "ok"
        "ok": {"images": [str(image)], "label": str(label)},
        "png": {"images": [str(tmp_path / "x.png")], "label": str(label)},
    }
    _write_json(folder, file_map, numTraining=3, domains={"ok": "A"})
    raw = load_raw_dataset(folder)
    text = "\n".join(raw.problems)
    assert f"{folder / 'missing' / 'gone_0000.nii.gz'}: image file missing for channel 0 of case gone" in text
    assert "$SAMDG_TEST_UNSET_VAR/gone.nii.gz: label file missing for case gone" in text
    assert "environment variable $SAMDG_TEST_UNSET_VAR not set" in text
    assert "'dataset' entry two lists 2 image file(s), but channel_names declares 1" in text
    assert f"{tmp_path / 'x.png'}: does not end in the dataset's file_ending .nii.gz" in text
    assert f"{label}: listed for both case ok and case png" in text
    assert "case two ('dataset' map) is missing from the 'domains' map" in text
    assert "numTraining is 3 but the 'dataset' map holds 4 cases" in text
    assert raw.training_cases["gone"].label_path is None
    assert set(raw.problems) <= set(verify_dataset(raw, num_workers=1))  # the integrity check reports them too


def test_integrity_check_reads_the_mapped_files(samdg_roots, tmp_path):
    folder = samdg_roots["raw"] / "Dataset902_BadLabel"
    image, _ = _ct_files(tmp_path / "data", "c", 0)
    save_nifti(np.full((40, 36, 12), 7, np.uint8), (0.8, 0.8, 2.5), tmp_path / "data" / "bad_seg.nii.gz")
    _write_json(folder, {"c": {"images": [str(image)], "label": str(tmp_path / "data" / "bad_seg.nii.gz")}})
    errors = verify_dataset(load_raw_dataset(folder), num_workers=1)
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'data' / 'bad_seg.nii.gz'}: label value(s) 7")


def test_rgb_case_is_one_listed_file(samdg_roots, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "eye.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "eye_seg.png")
    folder = samdg_roots["raw"] / "Dataset903_Fundus"
    meta = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "disc": 1},
            "file_ending": ".png", "dataset": {"eye": {"images": [str(tmp_path / "eye.png")],
                                                       "label": str(tmp_path / "eye_seg.png")}}}
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps(meta))
    raw = load_raw_dataset(folder)
    assert raw.problems == [] and raw.training_cases["eye"].image_paths == [str(tmp_path / "eye.png")]
    assert verify_dataset(raw, num_workers=1) == []


@pytest.mark.parametrize("file_map, message", [
    (["a"], "'dataset' must map case ids to"),
    ({}, "'dataset' lists no training case"),
    ({"a": "a_0000.nii.gz"}, "'dataset' entry a: must be an object"),
    ({"a": {"label": "a.nii.gz"}}, "'dataset' entry a: \"images\" must be a non-empty list"),
    ({"a": {"images": "a_0000.nii.gz", "label": "a.nii.gz"}}, "\"images\" must be a non-empty list"),
    ({"a": {"images": [], "label": "a.nii.gz"}}, "\"images\" must be a non-empty list"),
    ({"a": {"images": [3], "label": "a.nii.gz"}}, "\"images\" must be a non-empty list"),
    ({"a": {"images": ["a_0000.nii.gz"]}}, "'dataset' entry a: \"label\" must be a file path"),
    ({"a": {"images": ["a_0000.nii.gz"], "label": ["a.nii.gz"]}}, "\"label\" must be a file path"),
    ({"../a": {"images": ["a_0000.nii.gz"], "label": "a.nii.gz"}}, "case id '../a' is not usable as a file name"),
])
def test_malformed_map_raises_naming_dataset_json(samdg_roots, file_map, message):
    folder = samdg_roots["raw"] / "Dataset904_Malformed"
    _write_json(folder, file_map)
    with pytest.raises(SamdgError, match="dataset.json: ") as error:
        load_raw_dataset(folder)
    assert str(error.value).startswith(str(folder / "dataset.json")) and message in str(error.value)


def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``roots`` with its modification time and content hash."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            state[str(path)] = (path.stat().st_mtime_ns, digest)
    return state


def test_plan_and_preprocess_on_a_mapped_dataset_leaves_raw_untouched(samdg_roots, tmp_path, monkeypatch, capsys):
    from samdg.cli.plan_and_preprocess import main

    folder, _ = _outside_dataset(samdg_roots["raw"], tmp_path, monkeypatch)
    watched = (samdg_roots["raw"], tmp_path / "absolute", tmp_path / "storage")
    before = _snapshot(*watched)
    try:
        code = main(["-d", "900", "-np", "1", "--no_pbar"])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0, capsys.readouterr().err
    assert _snapshot(*watched) == before
    output = samdg_roots["preprocessed"] / "Dataset900_Elsewhere"
    assert sorted(p.stem for p in (output / "samdgPlans_2d").glob("*.json")) == ["abs", "env", "rel"]
    fingerprint = json.loads((output / "dataset_fingerprint.json").read_text())
    assert fingerprint["case_ids"] == ["abs", "env", "rel"]
    copied = json.loads((output / "dataset.json").read_text())
    assert copied["dataset"] == json.loads((folder / "dataset.json").read_text())["dataset"]
