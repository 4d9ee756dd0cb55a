"""samdg_convert_saml on small fixtures laid out as the SAML download and as DeSAM's copy of MaxStyle's data."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion.saml import convert_saml, main
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError

# An LPS-like affine with 3.6 mm slices, so that a converter that rebuilt the geometry would be caught.
AFFINE = np.array([[-0.6, 0.0, 0.0, 100.0], [0.0, -0.6, 0.0, 90.0], [0.0, 0.0, 3.6, -20.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (12, 10, 4)
# SAML's site folders with the cases each holds (real ids: HK starts at Case38, UCL at Case01 then Case26).
SITE_CASES = {"RUNMC": ("Case00", "Case01"), "BMC": ("Case00",), "I2CVB": ("Case00",), "UCL": ("Case01", "Case26"),
              "BIDMC": ("Case00",), "HK": ("Case38",)}


def _save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


def _mask(rng, zonal):
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:9, 2:8, 1:3] = 1
    if zonal:  # the NCI-ISBI sites draw a second zone with the value 2
        mask[3:9, 2:4, 1:3] = 2
    return mask


def _saml(root):
    """The SAML download: six site folders, CaseNN.nii.gz + CaseNN_segmentation.nii.gz (BMC: _Segmentation)."""
    rng = np.random.default_rng(0)
    for site, cases in SITE_CASES.items():
        suffix = "_Segmentation" if site == "BMC" else "_segmentation"
        for case in cases:
            _save(rng.integers(0, 900, SHAPE).astype(np.int16), root / site / f"{case}.nii.gz")
            _save(_mask(rng, site in ("RUNMC", "BMC")), root / site / f"{case}{suffix}.nii.gz")
    (root / "HK" / ".DS_Store").write_bytes(b"finder")
    return root


def _desam(root, rows=((3, "A-ISBI"), (1, "A-ISBI"), (2, "F-HK"), (7, "C-I2CVB"))):
    """DeSAM's raw_data: imagesTr/prostate_NNN_0000.nii.gz, labelsTr/prostate_NNN.nii.gz, prostate_patientid.csv."""
    rng = np.random.default_rng(1)
    for patient, _ in rows:
        _save(rng.integers(0, 900, SHAPE).astype(np.int16), root / "imagesTr" / f"prostate_{patient:03d}_0000.nii.gz")
        _save(_mask(rng, False), root / "labelsTr" / f"prostate_{patient:03d}.nii.gz")
    (root / "prostate_patientid.csv").write_text("patientid,center\n" + "".join(f"{p},{c}\n" for p, c in rows))
    return root


def _maxstyle(root):
    """MaxStyle's archive: reorganized/{A-ISBI..F-HK, G-MedicalDecathlon}/patient_N/{t2_img,label}_clipped.nii.gz."""
    rng = np.random.default_rng(2)
    for centre in ("A-ISBI", "B-ISBI_1.5", "C-I2CVB", "D-UCL", "E-BIDMC", "F-HK", "G-MedicalDecathlon"):
        for patient in ("patient_1", "patient_2", "patient_10"):
            _save(rng.integers(0, 900, SHAPE).astype(np.int16), root / centre / patient / "t2_img_clipped.nii.gz")
            _save(_mask(rng, False), root / centre / patient / "label_clipped.nii.gz")
    return root


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_saml_sites_become_domains_with_binary_labels_and_the_input_is_untouched(tmp_path, samdg_roots, capsys):
    source = _saml(tmp_path / "Processed_data_nii")
    before = _snapshot(source)
    assert main(["-i", str(source), "-np", "1"]) == 0
    target = samdg_roots["raw"] / "Dataset201_SAMLProstate"
    raw = load_raw_dataset(target)
    assert verify_dataset(raw) == []
    assert raw.domains["RUNMC_Case01"] == "RUNMC" and raw.domains["HK_Case38"] == "HK"
    assert sorted(raw.domain_names) == sorted(SITE_CASES)
    assert len(raw.training_cases) == 8 and not raw.test_cases
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "prostate": 1} and meta["channel_names"] == {"0": "T2"}
    image = target / "imagesTr" / "UCL_Case26_0000.nii.gz"
    assert image.read_bytes() == (source / "UCL" / "Case26.nii.gz").read_bytes()  # images copied as they are
    label = nib.load(str(target / "labelsTr" / "RUNMC_Case00.nii.gz"))
    original = np.asanyarray(nib.load(str(source / "RUNMC" / "Case00_segmentation.nii.gz")).dataobj)
    assert np.array_equal(np.asanyarray(label.dataobj), (original > 0).astype(np.uint8))  # zones 1 and 2 -> 1
    assert np.allclose(label.affine, AFFINE)
    table = capsys.readouterr().out
    assert "| RUNMC | 2 | 0 | 3.6 x 0.6 x 0.6 | 4 x 10 x 12 |" in table and "| HK | 1 | 0 |" in table
    assert _snapshot(source) == before


def test_zonal_keeps_the_two_values_of_the_isbi_sites_only(tmp_path):
    target = convert_saml(_saml(tmp_path / "saml"), zonal=True)
    raw = load_raw_dataset(target)
    assert target.name == "Dataset201_SAMLProstateZonal" and sorted(raw.domain_names) == ["BMC", "RUNMC"]
    label = np.asanyarray(nib.load(str(target / "labelsTr" / "BMC_Case00.nii.gz")).dataobj)
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    assert verify_dataset(raw) == []


def test_ms_net_site_names_are_read_as_the_saml_ones(tmp_path):
    source = _saml(tmp_path / "saml")
    (source / "RUNMC").rename(source / "ISBI")
    (source / "BMC").rename(source / "ISBI_1.5")
    raw = load_raw_dataset(convert_saml(source))
    assert raw.domains["RUNMC_Case00"] == "RUNMC" and raw.domains["BMC_Case00"] == "BMC"


def test_an_unexpected_file_in_a_site_folder_is_named(tmp_path, samdg_roots, capsys):
    source = _saml(tmp_path / "saml")
    (source / "UCL" / "Case26_seg_v2.nii.gz").write_bytes(b"a stray export")
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(source)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"samdg: error: {source / 'UCL' / 'Case26_seg_v2.nii.gz'}: unexpected file; expected "
                     "CaseNN.nii.gz and CaseNN_segmentation.nii.gz")
    assert not (samdg_roots["raw"] / "Dataset201_SAMLProstate").exists()


def test_a_missing_mask_or_site_and_a_foreign_label_value_are_one_line_errors(tmp_path):
    source = _saml(tmp_path / "saml")
    (source / "HK" / "Case38_segmentation.nii.gz").unlink()
    with pytest.raises(SamdgError, match=r"HK/Case38_segmentation.nii.gz: missing; expected the mask of Case38"):
        convert_saml(source)
    source = _saml(tmp_path / "saml2")
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = 255
    _save(mask, source / "I2CVB" / "Case00_segmentation.nii.gz")
    with pytest.raises(SamdgError, match=r"I2CVB/Case00_segmentation.nii.gz: unexpected label value\(s\) \[255\]"):
        convert_saml(source)
    source = _saml(tmp_path / "saml3")
    for path in (source / "BIDMC").iterdir():
        path.unlink()
    (source / "BIDMC").rmdir()
    with pytest.raises(SamdgError, match=r"saml3/BIDMC: missing; expected the site folder BIDMC"):
        convert_saml(source)
    source = _saml(tmp_path / "saml4")
    (source / "RUNMC").rename(source / "ISBI")
    (source / "BMC").rename(source / "ISBI_1.5")
    (source / "HK").rename(source / "RUNMC")
    with pytest.raises(SamdgError, match=r"saml4/RUNMC: holds site RUNMC like .*saml4/ISBI; keep one of the two"):
        convert_saml(source)


def test_a_mask_header_with_rounding_noise_is_put_on_its_image_grid_and_a_shifted_one_is_refused(tmp_path):
    source = _saml(tmp_path / "saml")
    mask_path = source / "UCL" / "Case01_segmentation.nii.gz"
    mask = np.asanyarray(nib.load(str(mask_path)).dataobj)
    noisy = AFFINE.copy()
    noisy[0, 3] += 4e-3
    nib.save(nib.Nifti1Image(mask, noisy), str(mask_path))
    target = convert_saml(source)
    assert np.allclose(nib.load(str(target / "labelsTr" / "UCL_Case01.nii.gz")).affine, AFFINE, atol=1e-6)
    assert verify_dataset(load_raw_dataset(target)) == []
    source = _saml(tmp_path / "shifted")
    shifted = AFFINE.copy()
    shifted[2, 3] += 3.6
    nib.save(nib.Nifti1Image(mask, shifted), str(source / "HK" / "Case38_segmentation.nii.gz"))
    with pytest.raises(SamdgError, match=r"HK/Case38_segmentation.nii.gz: its voxel-to-world matrix differs from its "
                                         r"image Case38.nii.gz"):
        convert_saml(source, dataset_id=204)


def test_a_rerun_resumes_and_skips_what_was_written(tmp_path):
    source = _saml(tmp_path / "saml")
    target = convert_saml(source)
    kept, lost = target / "labelsTr" / "HK_Case38.nii.gz", target / "imagesTr" / "UCL_Case01_0000.nii.gz"
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    (target / "dataset.json").unlink()
    convert_saml(source)
    assert kept.stat().st_mtime_ns == kept_mtime and lost.is_file() and (target / "dataset.json").is_file()


def test_desam_layout_uses_the_csv_centres_in_its_order(tmp_path):
    source = _desam(tmp_path / "raw_data")
    before = _snapshot(source)
    target = convert_saml(source, dataset_id=202)
    meta = json.loads((target / "dataset.json").read_text())
    assert list(meta["domains"].items()) == [("prostate_003", "RUNMC"), ("prostate_001", "RUNMC"),
                                             ("prostate_002", "HK"), ("prostate_007", "I2CVB")]
    assert verify_dataset(load_raw_dataset(target)) == []
    assert _snapshot(source) == before
    with pytest.raises(SamdgError, match=r"Dataset202_SAMLProstate: was converted with other settings"):
        convert_saml(_saml(tmp_path / "saml"), dataset_id=202)  # its cases would mix with DeSAM's
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == [
        "prostate_001.nii.gz", "prostate_002.nii.gz", "prostate_003.nii.gz", "prostate_007.nii.gz"]


def test_desam_layout_errors_name_the_csv_row_or_the_file(tmp_path):
    source = _desam(tmp_path / "raw_data")
    (source / "prostate_patientid.csv").write_text("patientid,center\n3,A-ISBI\n1,Z-SOMEWHERE\n")
    with pytest.raises(SamdgError, match=r"prostate_patientid.csv: line 3: expected an integer patientid and a "
                                         r"center among A-ISBI"):
        convert_saml(source)
    (source / "prostate_patientid.csv").write_text("patientid,center\n3,A-ISBI\n1,A-ISBI\n2,F-HK\n")
    with pytest.raises(SamdgError, match=r"prostate_007_0000.nii.gz: patient 7 has no row in"):
        convert_saml(source)
    (source / "prostate_patientid.csv").write_text("patientid,center\n3,A-ISBI\n1,A-ISBI\n2,F-HK\n7,C-I2CVB\n"
                                                   "3,B-ISBI_1.5\n")
    with pytest.raises(SamdgError, match=r"prostate_patientid.csv: line 6: patient 3 is already on line 2"):
        convert_saml(source)
    (source / "prostate_patientid.csv").write_text("patientid,center\n3,A-ISBI\n1,A-ISBI\n2,F-HK\n7,C-I2CVB\n")
    (source / "labelsTr" / "prostate_002.nii.gz").unlink()
    with pytest.raises(SamdgError, match=r"labelsTr/prostate_002.nii.gz: missing; expected the mask of patient 2"):
        convert_saml(source)


def test_maxstyle_archive_gives_the_six_sites_and_skips_its_msd_folder(tmp_path):
    source = _maxstyle(tmp_path / "reorganized")
    before = _snapshot(source)
    target = convert_saml(source, dataset_id=212)
    meta = json.loads((target / "dataset.json").read_text())
    assert list(meta["domains"])[:3] == ["RUNMC_patient_1", "RUNMC_patient_2", "RUNMC_patient_10"]
    assert sorted(set(meta["domains"].values())) == sorted(SITE_CASES) and len(meta["domains"]) == 18
    assert verify_dataset(load_raw_dataset(target)) == []
    assert _snapshot(source) == before
    (source / "D-UCL" / "patient_2" / "label_clipped.nii.gz").unlink()
    (target / "dataset.json").unlink()
    with pytest.raises(SamdgError, match=r"D-UCL/patient_2/label_clipped.nii.gz: missing; expected MaxStyle's "
                                         r"label_clipped.nii.gz"):
        convert_saml(source, dataset_id=212)


def test_the_converted_fixture_plans_and_preprocesses(tmp_path):
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    convert_saml(_saml(tmp_path / "saml"), dataset_id=203)
    assert plan_and_preprocess(["-d", "203", "--variant", "tiny_vit_test", "-np", "1", "--no_pbar"]) == 0
