"""samdg_convert_dofe on a small fixture laid out as the unpacked DoFE fundus archive."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from dataset_conversion.dofe import convert_dofe, label_map, main
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError

SIZE = (36, 44)
# Real file names of each source: Drishti-GS, RIM-ONE-r3, REFUGE train, REFUGE validation.
NAMES = {"Domain1": {"train": ["gdrishtiGS_002", "ndrishtiGS_046"], "test": ["gdrishtiGS_001"]},
         "Domain2": {"train": ["G-1-L"], "test": ["N-2-R"]},
         "Domain3": {"train": ["g0001"], "test": ["n0002"]},
         "Domain4": {"train": ["V0029"], "test": ["V0001"]}}


def _mask():
    """DoFE's coding: 255 background, 128 rim, 0 cup, with a resampling halo of intermediate greys."""
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    radius = (yy - 18) ** 2 + (xx - 22) ** 2
    mask = np.full(SIZE, 255, np.uint8)
    mask[radius <= 12**2] = 210  # halo: still background
    mask[radius <= 11**2] = 128
    mask[radius <= 5**2] = 40  # halo: still cup
    mask[radius <= 4**2] = 0
    return mask


def _dofe(root, rgb_masks=False):
    rng = np.random.default_rng(0)
    for domain, splits in NAMES.items():
        for split, stems in splits.items():
            for stem in stems:
                rois = root / domain / split / "ROIs"
                (rois / "image").mkdir(parents=True, exist_ok=True)
                (rois / "mask").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(rois / "image" / f"{stem}.png")
                mask = Image.fromarray(_mask())
                (mask.convert("RGB") if rgb_masks else mask).save(rois / "mask" / f"{stem}.png")
    (root / "__MACOSX" / "Domain1").mkdir(parents=True)  # archive debris, skipped
    return root


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_train_and_test_splits_become_cases_of_four_domains_with_disc_and_cup_regions(tmp_path, samdg_roots, capsys):
    source = _dofe(tmp_path / "Fundus", rgb_masks=True)
    before = _snapshot(source)
    assert main(["-i", str(source), "-np", "1"]) == 0
    target = samdg_roots["raw"] / "Dataset203_DoFEFundus"
    raw = load_raw_dataset(target)
    assert verify_dataset(raw) == []
    assert sorted(raw.training_cases) == ["Domain1_gdrishtiGS_002", "Domain1_ndrishtiGS_046", "Domain2_G-1-L",
                                          "Domain3_g0001", "Domain4_V0029"]
    assert sorted(raw.test_cases) == ["Domain1_gdrishtiGS_001", "Domain2_N-2-R", "Domain3_n0002", "Domain4_V0001"]
    assert raw.domains["Domain4_V0001"] == "Domain4" and raw.domain_names == list(NAMES)
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "optic_disc": [1, 2], "optic_cup": [2]}
    assert meta["regions_class_order"] == [1, 2] and meta["numTraining"] == 5
    image = np.asarray(Image.open(target / "imagesTs" / "Domain2_N-2-R_0000.png"))
    assert np.array_equal(image, np.asarray(Image.open(source / "Domain2" / "test" / "ROIs" / "image" / "N-2-R.png")))
    label = np.asarray(Image.open(target / "labelsTr" / "Domain3_g0001.png"))
    expected = np.zeros(SIZE, np.uint8)
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    expected[(yy - 18) ** 2 + (xx - 22) ** 2 <= 11**2] = 1
    expected[(yy - 18) ** 2 + (xx - 22) ** 2 <= 5**2] = 2
    assert np.array_equal(label, expected)
    table = capsys.readouterr().out
    assert "| Domain1 | 2 | 1 | 1 x 1 | 36 x 44 |" in table
    assert _snapshot(source) == before


def test_label_map_follows_dofe_thresholds():
    assert label_map(np.array([[255, 201, 200, 51, 50, 0]], np.uint8)).tolist() == [[0, 0, 1, 1, 2, 2]]


def test_a_mask_without_image_and_a_stray_folder_are_named(tmp_path, samdg_roots, capsys):
    source = _dofe(tmp_path / "Fundus")
    (source / "Domain3" / "test" / "ROIs" / "image" / "n0002.png").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(source)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    rois = source / "Domain3" / "test" / "ROIs"
    assert error == (f"samdg: error: {rois / 'image' / 'n0002.png'}: missing; expected the image of "
                     f"{rois / 'mask' / 'n0002.png'}")
    assert not (samdg_roots["raw"] / "Dataset203_DoFEFundus").exists()
    source = _dofe(tmp_path / "again")
    (source / "Domain2" / "val").mkdir()
    with pytest.raises(SamdgError, match=r"Domain2/val: unexpected file; expected the folders train and test"):
        convert_dofe(source)


def test_a_grey_photograph_is_refused_by_name(tmp_path):
    source = _dofe(tmp_path / "Fundus")
    path = source / "Domain1" / "train" / "ROIs" / "image" / "gdrishtiGS_002.png"
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(path)
    with pytest.raises(SamdgError, match=r"gdrishtiGS_002.png: has colour mode L; expected an 8-bit RGB photograph"):
        convert_dofe(source)


def test_a_rerun_resumes(tmp_path):
    source = _dofe(tmp_path / "Fundus")
    target = convert_dofe(source)
    kept, lost = target / "imagesTr" / "Domain2_G-1-L_0000.png", target / "labelsTs" / "Domain4_V0001.png"
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    (target / "dataset.json").unlink()
    convert_dofe(source)
    assert kept.stat().st_mtime_ns == kept_mtime and lost.is_file()
