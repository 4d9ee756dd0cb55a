"""samdg_convert_chaos_btcv on a small CHAOS + BTCV fixture laid out as the downloads unpack.

CHAOS MR: ``CHAOS_Train_Sets/Train_Sets/MR/<patient>/{T2SPIR,T1DUAL}`` with real DICOM slices written by SimpleITK
(an oblique orientation, and file names that run against the slice normal, so a converter that guessed the
geometry from names, spacing or a default direction would fail) and Ground PNGs in CHAOS's grey levels.
BTCV: ``RawData/Training/{img,label}/img0001.nii.gz`` / ``label0001.nii.gz`` with BTCV's 13-organ coding.
"""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from dataset_conversion.chaos_btcv import LPS_TO_RAS, convert_chaos_btcv, main
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError

SimpleITK = pytest.importorskip("SimpleITK")  # in the test environment; only the GPU machine lacks it

ROWS, COLUMNS, SLICES = 12, 10, 4
ROW_COSINE, COLUMN_COSINE = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(0.5), -np.sin(0.5)])
NORMAL = np.cross(ROW_COSINE, COLUMN_COSINE)
PIXEL_SPACING = (1.25, 1.5)  # mm between rows, between columns (DICOM order)
FIRST_POSITION = np.array([-100.5, -80.25, 42.5])
STEP = -6.0 * NORMAL  # file names run against the normal: slice k is 6 mm further down than slice k-1
# CHAOS grey level of each slice's square: a different organ per slice, so a reversed stack is caught.
SLICE_GREYS = (63, 126, 189, 252)
SLICE_LABELS = (1, 3, 4, 2)  # liver, right kidney, left kidney, spleen in samdg's coding


def _slice_pixels(patient: int, sequence: str, k: int) -> np.ndarray:
    seed = patient * 100 + k + (0 if sequence == "T2SPIR" else 10 if sequence == "InPhase" else 20)
    return np.random.default_rng(seed).integers(0, 1500, (ROWS, COLUMNS)).astype(np.uint16)


def _write_dicom(path, pixels, position):
    image = SimpleITK.GetImageFromArray(pixels)
    image.SetSpacing((PIXEL_SPACING[1], PIXEL_SPACING[0]))
    tags = {"0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "\\".join(f"{v:.7f}" for v in (*ROW_COSINE, *COLUMN_COSINE)),
            "0028|0030": f"{PIXEL_SPACING[0]}\\{PIXEL_SPACING[1]}", "0008|0060": "MR"}
    for tag, value in tags.items():
        image.SetMetaData(tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    SimpleITK.WriteImage(image, str(path))


def _write_ground(path, k):
    grey = np.zeros((ROWS, COLUMNS), np.uint8)
    grey[2:6, 3:7] = SLICE_GREYS[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(path)


def _chaos(root, patients=(1, 2)):
    mr = root / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    for patient in patients:
        folder = mr / str(patient)
        for k in range(SLICES):
            position = FIRST_POSITION + k * STEP
            _write_dicom(folder / "T2SPIR" / "DICOM_anon" / f"IMG-0002-{k + 1:05d}.dcm",
                         _slice_pixels(patient, "T2SPIR", k), position)
            _write_ground(folder / "T2SPIR" / "Ground" / f"IMG-0002-{k + 1:05d}.png", k)
            # T1-DUAL: echoes numbered alternately here (an assumption; pairing is by name order either way).
            _write_dicom(folder / "T1DUAL" / "DICOM_anon" / "InPhase" / f"IMG-0004-{2 * k + 2:05d}.dcm",
                         _slice_pixels(patient, "InPhase", k), position)
            _write_dicom(folder / "T1DUAL" / "DICOM_anon" / "OutPhase" / f"IMG-0004-{2 * k + 1:05d}.dcm",
                         _slice_pixels(patient, "OutPhase", k), position)
            _write_ground(folder / "T1DUAL" / "Ground" / f"IMG-0004-{2 * k + 2:05d}.png", k)
    ct = root / "CHAOS_Train_Sets" / "Train_Sets" / "CT" / "1"  # liver-only CT: present in the download, not used
    (ct / "DICOM_anon").mkdir(parents=True)
    (ct / "DICOM_anon" / "i0000,0000b.dcm").write_bytes(b"not read")
    return root / "CHAOS_Train_Sets"


BTCV_AFFINE = np.array([[-0.8, 0, 0, 170.0], [0, -0.8, 0, 190.0], [0, 0, 3.0, -300.0], [0, 0, 0, 1]])


def _btcv(root, cases=(1, 2)):
    training = root / "RawData" / "Training"
    for number in cases:
        for folder in ("img", "label"):
            (training / folder).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(number)
        nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, (8, 7, 5)).astype(np.int16), BTCV_AFFINE),
                 str(training / "img" / f"img{number:04d}.nii.gz"))
        label = np.arange(8 * 7 * 5).reshape(8, 7, 5) % 14  # every one of the 13 organs and background
        nib.save(nib.Nifti1Image(label.astype(np.uint8), BTCV_AFFINE),
                 str(training / "label" / f"label{number:04d}.nii.gz"))
    (root / "RawData" / "Testing" / "img").mkdir(parents=True)
    return root / "RawData"


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def downloads(tmp_path):
    return _chaos(tmp_path / "chaos"), _btcv(tmp_path / "btcv")


def test_cases_domains_and_label_coding(downloads, samdg_roots):
    before = [_snapshot(folder) for folder in downloads]
    target = convert_chaos_btcv(downloads, num_processes=1)
    assert [_snapshot(folder) for folder in downloads] == before, "the downloads must not change"
    assert target == samdg_roots["raw"] / "Dataset221_AbdomenCTMR"
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "right_kidney": 3, "left_kidney": 4}
    assert meta["domains"] == {"btcv_0001": "CT", "btcv_0002": "CT",
                               **{f"chaos_0{p}_{s}": d for p in (1, 2) for s, d in
                                  (("t2spir", "MR-T2SPIR"), ("t1in", "MR-T1in"), ("t1out", "MR-T1out"))}}
    assert meta["numTraining"] == 8 and meta["channel_names"] == {"0": "abdomen"}
    assert verify_dataset(load_raw_dataset(target)) == []

    source_label = np.asanyarray(nib.load(str(downloads[1] / "Training" / "label" / "label0002.nii.gz")).dataobj)
    label = nib.load(str(target / "labelsTr" / "btcv_0002.nii.gz"))
    expected = np.select([source_label == 6, source_label == 1, source_label == 2, source_label == 3], [1, 2, 3, 4], 0)
    assert np.array_equal(np.asanyarray(label.dataobj), expected) and np.allclose(label.affine, BTCV_AFFINE)
    image_bytes = (target / "imagesTr" / "btcv_0002_0000.nii.gz").read_bytes()
    assert image_bytes == (downloads[1] / "Training" / "img" / "img0002.nii.gz").read_bytes()


@pytest.mark.parametrize("case, sequence", [("chaos_02_t2spir", "T2SPIR"), ("chaos_02_t1in", "InPhase"),
                                            ("chaos_02_t1out", "OutPhase")])
def test_mr_voxels_labels_and_geometry_follow_the_dicom_headers(downloads, case, sequence):
    target = convert_chaos_btcv(downloads, num_processes=1)
    image = nib.load(str(target / "imagesTr" / f"{case}_0000.nii.gz"))
    label = nib.load(str(target / "labelsTr" / f"{case}.nii.gz"))
    volume, labels = np.asanyarray(image.dataobj), np.asanyarray(label.dataobj)
    assert volume.shape == labels.shape == (COLUMNS, ROWS, SLICES)
    for k in range(SLICES):
        assert np.array_equal(volume[:, :, k].T, _slice_pixels(2, sequence, k))
        organ = np.zeros((ROWS, COLUMNS), np.uint8)
        organ[2:6, 3:7] = SLICE_LABELS[k]
        assert np.array_equal(labels[:, :, k].T, organ)
        # voxel (column i, row j, slice k) sits where DICOM puts it: IPP_k + i*dx*row_cosine + j*dy*column_cosine
        for i, j in ((0, 0), (COLUMNS - 1, 3)):
            lps = FIRST_POSITION + k * STEP + i * PIXEL_SPACING[1] * ROW_COSINE + j * PIXEL_SPACING[0] * COLUMN_COSINE
            assert np.allclose(image.affine @ [i, j, k, 1], [*(LPS_TO_RAS @ lps), 1], atol=1e-3)
    assert np.allclose(label.affine, image.affine)
    assert np.allclose(image.header.get_zooms(), (PIXEL_SPACING[1], PIXEL_SPACING[0], 6.0), atol=1e-4)


def test_a_rerun_writes_only_what_is_missing(downloads):
    target = convert_chaos_btcv(downloads, num_processes=2)
    kept = target / "imagesTr" / "chaos_01_t1in_0000.nii.gz"
    lost = target / "labelsTr" / "chaos_02_t2spir.nii.gz"
    kept_mtime, lost_bytes = kept.stat().st_mtime_ns, lost.read_bytes()
    lost.unlink()
    (target / "dataset.json").unlink()  # as after an interruption
    convert_chaos_btcv(downloads, num_processes=1)
    assert kept.stat().st_mtime_ns == kept_mtime and lost.read_bytes() == lost_bytes
    assert (target / "dataset.json").is_file() and not list(target.rglob(".*"))
    other = _btcv(downloads[1].parent / "other_copy")  # another BTCV folder must not resume into these files
    with pytest.raises(SamdgError, match=r"Dataset221_AbdomenCTMR: was converted with other settings"):
        convert_chaos_btcv([downloads[0], other], num_processes=1)


def _one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error.strip().splitlines()[-1]  # progress bars come before it


def test_a_ground_truth_grey_level_outside_chaos_coding_names_the_png(downloads, capsys):
    png = downloads[0] / "Train_Sets" / "MR" / "2" / "T1DUAL" / "Ground" / "IMG-0004-00004.png"
    grey = np.asarray(Image.open(png)).copy()
    grey[0, 0] = 100
    Image.fromarray(grey).save(png)
    error = _one_line_error(["-i", *map(str, downloads), "-np", "1"], capsys)
    assert f"{png}: grey level(s) [100] are none of CHAOS's organ codes" in error


def test_a_slice_off_the_stack_names_the_dicom_file(downloads):
    dicom = downloads[0] / "Train_Sets" / "MR" / "1" / "T2SPIR" / "DICOM_anon" / "IMG-0002-00003.dcm"
    _write_dicom(dicom, _slice_pixels(1, "T2SPIR", 2), FIRST_POSITION + 2.5 * STEP)
    with pytest.raises(SamdgError, match=r"IMG-0002-00003.dcm: Image Position \(Patient\) .* off the evenly spaced"):
        convert_chaos_btcv(downloads, num_processes=1)


def test_missing_and_unexpected_files_are_named(downloads, tmp_path):
    ground = downloads[0] / "Train_Sets" / "MR" / "1" / "T2SPIR" / "Ground"
    (ground / "IMG-0002-00004.png").unlink()
    with pytest.raises(SamdgError, match=r"MR/1/T2SPIR/Ground: 3 PNG slices for the 4 DICOM slices"):
        convert_chaos_btcv(downloads, num_processes=1)
    _write_ground(ground / "IMG-0002-00004.png", 3)
    (ground / "notes.txt").write_text("x")
    with pytest.raises(SamdgError, match=r"Ground/notes.txt: unexpected file"):
        convert_chaos_btcv(downloads, num_processes=1)
    (ground / "notes.txt").unlink()
    (downloads[1] / "Training" / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(SamdgError, match=r"label/label0002.nii.gz: missing; it labels .*img0002.nii.gz"):
        convert_chaos_btcv(downloads, num_processes=1)
    with pytest.raises(SamdgError, match=r"no BTCV Training folder found"):
        convert_chaos_btcv([downloads[0]], num_processes=1)


def test_the_converted_fixture_plans_and_preprocesses(tmp_path, capsys):
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    _chaos(tmp_path / "downloads", patients=(1,))
    _btcv(tmp_path / "downloads", cases=(1,))
    assert main(["-i", str(tmp_path / "downloads"), "-d", "21", "-np", "1"]) == 0
    table = capsys.readouterr().out
    assert "| MR-T1in | 1 | 0 |" in table and "| CT | 1 | 0 |" in table
    assert plan_and_preprocess(["-d", "21", "--variant", "tiny_vit_test", "-np", "1", "--no_pbar"]) in (0, None)
