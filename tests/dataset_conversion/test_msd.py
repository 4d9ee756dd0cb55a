import json

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion.msd import convert_msd_dataset, main, parse_task_name
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError

# An oblique LPS-like affine, so that a converter which rebuilt the geometry from the zooms alone would fail.
AFFINE = np.array([[-0.6, 0.05, 0.0, 120.0], [0.0, -0.6, 0.1, 80.0], [0.0, 0.0, 3.6, -40.0], [0.0, 0.0, 0.0, 1.0]])


def _save(array, path, zooms=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, AFFINE)
    if zooms is not None:
        image.header.set_zooms(zooms)
    nib.save(image, str(path))


def _msd_task(root, name="Task05_Prostate", four_d=True, n_train=2):
    """A tiny MSD-shaped task: 4D (X,Y,Z,2) T2+ADC images, or 3D single-channel ones, plus macOS debris."""
    folder = root / name
    rng = np.random.default_rng(0)
    shape = (6, 5, 4, 2) if four_d else (6, 5, 4)
    zooms = (0.6, 0.6, 3.6, 1.0) if four_d else None
    cases = [f"prostate_{i:02d}" for i in range(n_train + 1)]
    for i, case in enumerate(cases):
        split = "imagesTr" if i < n_train else "imagesTs"
        _save(rng.integers(0, 1000, shape).astype(np.int16), folder / split / f"{case}.nii.gz", zooms)
        if i < n_train:
            _save(rng.integers(0, 3, shape[:3]).astype(np.uint8), folder / "labelsTr" / f"{case}.nii.gz")
    (folder / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (folder / "labelsTr" / "._prostate_00.nii.gz").write_bytes(b"junk")
    (folder / "imagesTr" / "_broken.nii.gz").write_bytes(b"junk")
    modality = {"0": "T2", "1": "ADC"} if four_d else {"0": "CT"}
    meta = {
        "name": "PROSTATE", "description": "tiny fixture", "licence": "CC-BY-SA 4.0",
        "tensorImageSize": "4D" if four_d else "3D",
        "modality": modality, "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": n_train, "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases[:n_train]],
        "test": [f"./imagesTs/{cases[-1]}.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_4d_cases_are_split_into_channel_files_keeping_3d_geometry(tmp_path, samdg_roots):
    source = _msd_task(tmp_path)
    target = convert_msd_dataset(source, num_processes=1)
    assert target == samdg_roots["raw"] / "Dataset005_Prostate"
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == [
        "prostate_00_0000.nii.gz", "prostate_00_0001.nii.gz", "prostate_01_0000.nii.gz", "prostate_01_0001.nii.gz"]
    test_images = sorted(p.name for p in (target / "imagesTs").iterdir())
    assert test_images == ["prostate_02_0000.nii.gz", "prostate_02_0001.nii.gz"]
    original = nib.load(str(source / "imagesTr" / "prostate_01.nii.gz"))
    for channel in (0, 1):
        split = nib.load(str(target / "imagesTr" / f"prostate_01_{channel:04d}.nii.gz"))
        assert split.shape == (6, 5, 4) and split.get_data_dtype() == np.int16
        assert np.array_equal(np.asanyarray(split.dataobj), np.asanyarray(original.dataobj)[..., channel])
        assert np.allclose(split.affine, AFFINE)
        assert np.allclose(split.header.get_zooms(), original.header.get_zooms()[:3])
    for case in ("prostate_00", "prostate_01"):  # labels are copied byte for byte
        label = f"{case}.nii.gz"
        assert (target / "labelsTr" / label).read_bytes() == (source / "labelsTr" / label).read_bytes()


def test_dataset_json_is_converted_and_the_result_passes_the_integrity_check(tmp_path):
    target = convert_msd_dataset(_msd_task(tmp_path), num_processes=1)
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2", "1": "ADC"}
    assert meta["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz" and meta["licence"] == "CC-BY-SA 4.0"
    assert not {"training", "test", "modality", "tensorImageSize", "domains"} & set(meta)
    raw = load_raw_dataset(target)
    assert sorted(raw.training_cases) == ["prostate_00", "prostate_01"] and list(raw.test_cases) == ["prostate_02"]
    assert verify_dataset(raw) == []


def test_3d_images_are_copied_as_channel_0_and_underscored_names_survive(tmp_path):
    source = _msd_task(tmp_path, name="Task09_My_Spleen_Data", four_d=False)
    target = convert_msd_dataset(source, num_processes=1)
    assert target.name == "Dataset009_My_Spleen_Data"
    copied = target / "imagesTr" / "prostate_00_0000.nii.gz"
    assert copied.read_bytes() == (source / "imagesTr" / "prostate_00.nii.gz").read_bytes()
    assert json.loads((target / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
    assert verify_dataset(load_raw_dataset(target)) == []


def test_parallel_workers_give_the_same_result(tmp_path):
    target = convert_msd_dataset(_msd_task(tmp_path), num_processes=2)
    assert len(list((target / "imagesTr").iterdir())) == 4 and verify_dataset(load_raw_dataset(target)) == []


def test_a_rerun_skips_finished_files_and_redoes_missing_ones(tmp_path):
    source = _msd_task(tmp_path)
    target = convert_msd_dataset(source, num_processes=1)
    kept = target / "imagesTr" / "prostate_00_0000.nii.gz"
    lost = target / "imagesTr" / "prostate_01_0001.nii.gz"
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    (target / "dataset.json").unlink()  # as after an interruption
    convert_msd_dataset(source, num_processes=1)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert lost.is_file() and (target / "dataset.json").is_file()
    assert not [p for p in target.rglob(".*")], "no temp files may be left behind"


def test_an_id_used_by_another_dataset_is_refused_with_a_hint(tmp_path, samdg_roots, capsys):
    source = _msd_task(tmp_path)
    (samdg_roots["preprocessed"] / "Dataset005_Other").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(source), "-np", "1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "dataset id 5 is already taken by Dataset005_Other" in error and "-overwrite_id" in error
    assert "Traceback" not in error
    assert not (samdg_roots["raw"] / "Dataset005_Prostate").exists()
    assert main(["-i", str(source), "-overwrite_id", "105", "-np", "1"]) == 0
    assert (samdg_roots["raw"] / "Dataset105_Prostate" / "dataset.json").is_file()


def test_a_foreign_dataset_with_the_same_name_is_not_touched(tmp_path, samdg_roots):
    foreign = samdg_roots["raw"] / "Dataset005_Prostate"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2"}}))
    with pytest.raises(SamdgError, match="not made by samdg_convert_msd"):
        convert_msd_dataset(_msd_task(tmp_path), num_processes=1)
    assert sorted(p.name for p in foreign.iterdir()) == ["dataset.json"]


def test_domains_json_adds_a_domain_map_and_must_cover_every_case(tmp_path):
    source = _msd_task(tmp_path)
    domains = tmp_path / "sites.json"
    domains.write_text(json.dumps({"prostate_00": "RUNMC", "prostate_01": "BMC"}))
    with pytest.raises(SamdgError, match=r"sites.json: 1 case\(s\) have no domain: prostate_02"):
        convert_msd_dataset(source, num_processes=1, domains_json=domains)
    domains.write_text(json.dumps({"prostate_00": "RUNMC", "prostate_01": "BMC", "prostate_02": "BMC", "other": "X"}))
    target = convert_msd_dataset(source, num_processes=1, domains_json=domains)
    raw = load_raw_dataset(target)
    assert raw.domains == {"prostate_00": "RUNMC", "prostate_01": "BMC", "prostate_02": "BMC"}


def test_a_channel_count_that_does_not_match_modality_names_the_file(tmp_path):
    source = _msd_task(tmp_path)
    meta = json.loads((source / "dataset.json").read_text())
    meta["modality"] = {"0": "T2", "1": "ADC", "2": "DWI"}
    (source / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SamdgError, match=r"prostate_00.nii.gz: shape \(6, 5, 4, 2\) does not hold the 3 channel"):
        convert_msd_dataset(source, num_processes=1)


@pytest.mark.parametrize(
    "name, expected",
    [("Task05_Prostate", (5, "Prostate")), ("Task10_Colon_Cancer_CT", (10, "Colon_Cancer_CT")),
     ("Task001_X", (1, "X"))],
)
def test_task_names(name, expected):
    assert parse_task_name(name) == expected


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["-i", str(tmp_path / "Task05_Missing")])
    assert "Task05_Missing: folder not found" in capsys.readouterr().err
    (tmp_path / "Prostate").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "Prostate" / sub).mkdir()
    (tmp_path / "Prostate" / "dataset.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["-i", str(tmp_path / "Prostate")])
    assert "not an MSD folder name of the form TaskXX_Name" in capsys.readouterr().err
