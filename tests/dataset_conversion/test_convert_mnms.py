"""samdg_convert_mnms on a small M&Ms fixture laid out as ``OpenDataset`` unpacks: the information CSV and
``{Training/Labeled,Training/Unlabeled,Validation,Testing}/<code>/<code>_sa.nii.gz`` (+ ``_sa_gt.nii.gz``), 4D
(X, Y, slices, frames) with labels only at the ED and ES frames."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion.mnms import convert_mnms, main
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError

CSV_NAME = "201014_M&Ms_Dataset_Information_-_opendataset.csv"
SHAPE = (9, 8, 3, 6)  # X, Y, slices, frames
AFFINE = np.array([[-1.3, 0.1, 0.0, 90.0], [0.05, 1.3, -0.4, -60.0], [0.0, 0.3, 9.2, 20.0], [0, 0, 0, 1]])
# (split folder, code, vendor letter, vendor name, centre, ED, ES, labelled)
SUBJECTS = [
    ("Training/Labeled", "A0S9V9", "A", "Siemens", 1, 0, 4, True),
    ("Training/Labeled", "A1D0Q7", "A", "Siemens", 1, 1, 5, True),
    ("Training/Labeled", "B2C4X8", "B", "Philips", 2, 0, 3, True),
    ("Training/Unlabeled", "C3U1N5", "C", "GE", 4, 0, 2, False),
    ("Validation", "C5V2K1", "C", "GE", 4, 2, 5, True),
    ("Validation", "D1V7M3", "D", "Canon", 5, 0, 4, True),
    ("Testing", "A4T6P2", "A", "Siemens", 6, 0, 4, True),
    ("Testing", "D8T3L0", "D", "Canon", 5, 1, 3, True),
]


def _labels_at(frame: int) -> np.ndarray:
    labels = np.zeros(SHAPE[:3], np.uint8)
    labels[2:5, 2:5, :] = 1 + frame % 3  # which structure depends on the frame, so a wrong frame is caught
    labels[6, 6, 0] = 3
    return labels


def _write(path, data, zooms=(*np.linalg.norm(AFFINE[:3, :3], axis=0), 30.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_zooms(zooms)
    image.header.set_xyzt_units("mm", "msec")
    nib.save(image, str(path))


def _open_dataset(root, subjects=SUBJECTS):
    folder = root / "OpenDataset"
    lines = ["External code,VendorName,Vendor,Centre,ED,ES"]
    for split, code, vendor, name, centre, ed, es, labelled in subjects:
        lines.append(f"{code},{name},{vendor},{centre},{ed},{es}")
        rng = np.random.default_rng(sum(map(ord, code)))
        _write(folder / split / code / f"{code}_sa.nii.gz", rng.integers(0, 800, SHAPE).astype(np.int16))
        if labelled:
            gt = np.zeros(SHAPE, np.uint8)
            for frame in (ed, es):
                gt[..., frame] = _labels_at(frame)
            _write(folder / split / code / f"{code}_sa_gt.nii.gz", gt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CSV_NAME).write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # Excel writes a BOM
    return folder


def _edit_csv(source, old_line, new_line):
    path = source / CSV_NAME
    text = path.read_text(encoding="utf-8")
    assert old_line in text
    path.write_text(text.replace(old_line, new_line), encoding="utf-8")


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def test_ed_and_es_frames_become_3d_cases_with_vendor_domains(tmp_path, samdg_roots):
    source = _open_dataset(tmp_path)
    before = _snapshot(source)
    target, skipped = convert_mnms(source, num_processes=1)
    assert _snapshot(source) == before, "the download must not change"
    assert target == samdg_roots["raw"] / "Dataset222_MnMs" and skipped == 1
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    labelled = [s for s in SUBJECTS if s[-1]]
    assert meta["domains"] == {f"{s[1]}_{phase}": s[2] for s in labelled for phase in ("ED", "ES")}
    assert meta["numTraining"] == 10
    raw = load_raw_dataset(target)
    assert sorted(raw.test_cases) == ["A4T6P2_ED", "A4T6P2_ES", "D8T3L0_ED", "D8T3L0_ES"]
    assert verify_dataset(raw) == []

    original = np.asanyarray(nib.load(str(source / "Validation" / "C5V2K1" / "C5V2K1_sa.nii.gz")).dataobj)
    for phase, frame in (("ED", 2), ("ES", 5)):
        image = nib.load(str(target / "imagesTr" / f"C5V2K1_{phase}_0000.nii.gz"))
        label = nib.load(str(target / "labelsTr" / f"C5V2K1_{phase}.nii.gz"))
        assert image.shape == label.shape == SHAPE[:3] and image.get_data_dtype() == np.int16
        assert np.array_equal(np.asanyarray(image.dataobj), original[..., frame])
        assert np.array_equal(np.asanyarray(label.dataobj), _labels_at(frame))
        assert np.allclose(image.affine, AFFINE) and np.allclose(label.affine, AFFINE)
        assert np.allclose(image.header.get_zooms(), np.linalg.norm(AFFINE[:3, :3], axis=0), atol=1e-4)
    assert (target / "labelsTs" / "D8T3L0_ES.nii.gz").is_file()


def test_a_rerun_writes_only_what_is_missing(tmp_path):
    source = _open_dataset(tmp_path)
    target, _ = convert_mnms(source, num_processes=2)
    kept, lost = target / "imagesTr" / "A0S9V9_ED_0000.nii.gz", target / "labelsTs" / "A4T6P2_ES.nii.gz"
    kept_mtime, lost_bytes = kept.stat().st_mtime_ns, lost.read_bytes()
    lost.unlink()
    (target / "dataset.json").unlink()
    convert_mnms(source, num_processes=1)
    assert kept.stat().st_mtime_ns == kept_mtime and lost.read_bytes() == lost_bytes
    assert not list(target.rglob(".*"))
    other_csv = tmp_path / "edited.csv"  # another information CSV must not resume into these files
    other_csv.write_bytes((source / CSV_NAME).read_bytes())
    with pytest.raises(SamdgError, match=r"Dataset222_MnMs: was converted with other settings"):
        convert_mnms(source, num_processes=1, info_csv=other_csv)


def test_a_one_based_es_frame_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    source = _open_dataset(tmp_path)
    _edit_csv(source, "B2C4X8,Philips,B,2,0,3", "B2C4X8,Philips,B,2,0,4")
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(source), "-np", "1"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "Traceback" not in error
    gt = source / "Training" / "Labeled" / "B2C4X8" / "B2C4X8_sa_gt.nii.gz"
    assert error.strip().splitlines()[-1].endswith(f"{gt}: frame 4 (ES in the information CSV) has no labels; ED and "
                                                   "ES are 0-based frame numbers")


def test_missing_unexpected_and_unknown_entries_are_named(tmp_path):
    source = _open_dataset(tmp_path)
    gt = source / "Validation" / "D1V7M3" / "D1V7M3_sa_gt.nii.gz"
    gt.rename(tmp_path / "moved.nii.gz")
    with pytest.raises(SamdgError, match=r"D1V7M3/D1V7M3_sa_gt.nii.gz: missing; expected the subject's 4D ground"):
        convert_mnms(source, num_processes=1)
    (tmp_path / "moved.nii.gz").rename(gt)
    (source / "Testing" / "D8T3L0" / "D8T3L0_sa_copy.nii.gz").write_bytes(b"x")
    with pytest.raises(SamdgError, match=r"D8T3L0_sa_copy.nii.gz: unexpected file"):
        convert_mnms(source, num_processes=1)
    (source / "Testing" / "D8T3L0" / "D8T3L0_sa_copy.nii.gz").unlink()
    csv_path = source / CSV_NAME
    csv_path.write_text("\n".join(line for line in csv_path.read_text(encoding="utf-8").splitlines()
                                  if not line.startswith("A4T6P2")), encoding="utf-8")
    with pytest.raises(SamdgError, match=r"Testing/A4T6P2: subject A4T6P2 is not in .*opendataset.csv"):
        convert_mnms(source, num_processes=1)
    (source / "notes.csv").write_text("x")
    with pytest.raises(SamdgError, match=r"2 .csv files .*give it with --info-csv"):
        convert_mnms(source, num_processes=1)
    with pytest.raises(SamdgError, match=r"OpenDataset/Validation/Training: missing; expected the M&Ms OpenDataset"):
        convert_mnms(source / "Validation", num_processes=1)


def test_an_ed_frame_past_the_last_frame_names_the_image(tmp_path):
    source = _open_dataset(tmp_path)
    _edit_csv(source, "A1D0Q7,Siemens,A,1,1,5", "A1D0Q7,Siemens,A,1,6,5")
    with pytest.raises(SamdgError, match=r"A1D0Q7_sa.nii.gz: has 6 frames \(0..5\), but the information CSV gives "
                                         "ED 6"):
        convert_mnms(source, num_processes=1)


def test_the_converted_fixture_plans_and_preprocesses(tmp_path, capsys):
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    source = _open_dataset(tmp_path, [s for s in SUBJECTS if s[0] != "Training/Labeled" or s[1] == "B2C4X8"])
    assert main(["-i", str(source.parent), "-d", "22", "-np", "1"]) == 0  # the folder the archive unpacked into
    out = capsys.readouterr().out
    assert "| D | 2 | 2 |" in out and "skipped 1 unlabelled subject(s)" in out
    assert plan_and_preprocess(["-d", "22", "--variant", "tiny_vit_test", "-np", "1", "--no_pbar"]) in (0, None)
