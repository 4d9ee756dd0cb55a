"""samdg_convert_riga on a small fixture laid out as the unpacked RIGAPlus.zip."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from dataset_conversion.riga import convert_riga, label_map, main
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError
from samdg.imageio import read_case, read_label

SIZE = (40, 48)  # (Y, X): not square, so that a transposed image would be caught
PHOTOGRAPHS = [("BinRushed", "BinRushed1", "image1"), ("BinRushed", "BinRushed2", "image10"),
               ("Magrabia", "MagrabiaMale", "image7"), ("MESSIDOR_Base1", "Labeled", "image20"),
               ("MESSIDOR_Base2", "Labeled", "image5"), ("MESSIDOR_Base3", "Labeled", "image3")]


def _mask(shift):
    """A RIGA mask: a disc of 255 around a cup of 128 (the rater's outline moves with ``shift``)."""
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    mask = np.zeros(SIZE, np.uint8)
    mask[(yy - 20) ** 2 + (xx - 24 - shift) ** 2 <= 12**2] = 255
    mask[(yy - 20) ** 2 + (xx - 24 - shift) ** 2 <= 5**2] = 128
    return mask


def _riga(root, raters=(1, 2)):
    rng = np.random.default_rng(0)
    for domain, collection, stem in PHOTOGRAPHS:
        folder = root / "RIGA" / domain / collection
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(folder / f"{stem}.tif")
        masks = root / "RIGA-mask" / domain / collection
        masks.mkdir(parents=True, exist_ok=True)
        for rater in raters:
            Image.fromarray(_mask(rater)).save(masks / f"{stem}-{rater}.tif")
    unlabelled = root / "RIGA" / "MESSIDOR_Base1" / "Unlabeled"
    unlabelled.mkdir()
    Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(unlabelled / "image99.tif")
    (root / "BinRushed_train.csv").write_text("image,mask\n")
    return root


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_photographs_become_rgb_png_cases_with_disc_and_cup_regions(tmp_path, samdg_roots, capsys):
    source = _riga(tmp_path / "RIGAPlus")
    before = _snapshot(source)
    assert main(["-i", str(source), "-np", "1"]) == 0
    target = samdg_roots["raw"] / "Dataset202_RIGAPlus"
    raw = load_raw_dataset(target)
    assert verify_dataset(raw) == []
    assert raw.domains == {"BinRushed_BinRushed1_image1": "BinRushed", "BinRushed_BinRushed2_image10": "BinRushed",
                           "Magrabia_MagrabiaMale_image7": "Magrabia", "MESSIDOR_Base1_Labeled_image20":
                           "MESSIDOR_Base1", "MESSIDOR_Base2_Labeled_image5": "MESSIDOR_Base2",
                           "MESSIDOR_Base3_Labeled_image3": "MESSIDOR_Base3"}  # the Unlabeled photograph is skipped
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "optic_disc": [1, 2], "optic_cup": [2]}
    assert meta["regions_class_order"] == [1, 2] and meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    case = raw.training_cases["Magrabia_MagrabiaMale_image7"]
    image, _ = read_case(case.image_paths)
    original = np.asarray(Image.open(source / "RIGA" / "Magrabia" / "MagrabiaMale" / "image7.tif"))
    assert image.shape == (3, 1, *SIZE) and np.array_equal(image[:, 0], np.moveaxis(original, -1, 0))
    label, _ = read_label(case.label_path)
    assert np.array_equal(label[0], label_map(_mask(1)))  # rater 1, as DAPSAM
    spec = raw.labels
    disc, cup = (np.isin(label[0], values) for values in spec.classes)
    assert np.array_equal(disc, _mask(1) > 0) and np.array_equal(cup, _mask(1) == 128)
    table = capsys.readouterr().out
    assert "| BinRushed | 2 | 0 | 1 x 1 | 40 x 48 |" in table
    assert _snapshot(source) == before


def test_another_rater_can_be_chosen_but_not_mixed_into_an_earlier_conversion(tmp_path):
    target = convert_riga(_riga(tmp_path / "RIGAPlus"), rater=2)
    label = np.asarray(Image.open(target / "labelsTr" / "BinRushed_BinRushed1_image1.png"))
    assert np.array_equal(label, label_map(_mask(2)))
    (target / "dataset.json").unlink()  # as if interrupted: a resume with rater 1 would keep rater 2's labels
    with pytest.raises(SamdgError, match=r"Dataset202_RIGAPlus: was converted with other settings .*conversion.json"):
        convert_riga(tmp_path / "RIGAPlus", rater=1)
    assert np.array_equal(np.asarray(Image.open(target / "labelsTr" / "BinRushed_BinRushed1_image1.png")), label)
    with pytest.raises(SamdgError, match="--rater must be one of 1..6"):
        convert_riga(tmp_path / "RIGAPlus", rater=7)


def test_a_missing_mask_and_an_unexpected_file_are_named(tmp_path, samdg_roots, capsys):
    source = _riga(tmp_path / "RIGAPlus")
    (source / "RIGA-mask" / "MESSIDOR_Base2" / "Labeled" / "image5-1.tif").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(source)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    mask = source / "RIGA-mask" / "MESSIDOR_Base2" / "Labeled" / "image5-1.tif"
    photograph = source / "RIGA" / "MESSIDOR_Base2" / "Labeled" / "image5.tif"
    assert error == f"samdg: error: {mask}: missing; expected rater 1's mask of {photograph}"
    assert not (samdg_roots["raw"] / "Dataset202_RIGAPlus").exists()
    source = _riga(tmp_path / "again")
    (source / "RIGA" / "BinRushed" / "BinRushed1" / "image2.jpg").write_bytes(b"a lossy copy")
    with pytest.raises(SamdgError, match=r"BinRushed1/image2.jpg: unexpected file; expected imageN.tif"):
        convert_riga(source)


def test_a_mask_that_does_not_fit_its_photograph_is_named(tmp_path):
    source = _riga(tmp_path / "RIGAPlus")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(source / "RIGA-mask" / "Magrabia" / "MagrabiaMale" /
                                                       "image7-1.tif")
    with pytest.raises(SamdgError, match=r"image7-1.tif: size \(20, 20\) differs from its photograph image7.tif "
                                         r"\(48, 40\)"):
        convert_riga(source)


def test_photographs_listed_in_a_test_csv_go_to_images_ts(tmp_path):
    source = _riga(tmp_path / "RIGAPlus")
    (source / "BinRushed_test.csv").write_text("image,mask\nRIGA/BinRushed/BinRushed2/image10.tif,"
                                               "RIGA-mask/BinRushed/BinRushed2/image10.tif\n")
    raw = load_raw_dataset(convert_riga(source))
    assert list(raw.test_cases) == ["BinRushed_BinRushed2_image10"]
    assert "BinRushed_BinRushed1_image1" in raw.training_cases and len(raw.training_cases) == 5
    label = raw.test_cases["BinRushed_BinRushed2_image10"].label_path
    assert label.endswith("labelsTs/BinRushed_BinRushed2_image10.png")
    assert verify_dataset(raw) == []
    (source / "BinRushed_test.csv").write_text("image,mask\nRIGA/BinRushed/BinRushed2/image11.tif,x\n")
    with pytest.raises(SamdgError, match=r"BinRushed_test.csv: line 2: .*BinRushed2/image11.tif does not exist"):
        convert_riga(source, dataset_id=205)


def test_a_rerun_resumes_and_the_result_plans_and_preprocesses(tmp_path):
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    source = _riga(tmp_path / "RIGAPlus")
    target = convert_riga(source, dataset_id=212)
    kept, lost = target / "imagesTr" / "BinRushed_BinRushed1_image1_0000.png", target / "labelsTr" / \
        "MESSIDOR_Base3_Labeled_image3.png"
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    (target / "dataset.json").unlink()
    convert_riga(source, dataset_id=212)
    assert kept.stat().st_mtime_ns == kept_mtime and lost.is_file()
    assert plan_and_preprocess(["-d", "212", "--variant", "tiny_vit_test", "-np", "1", "--no_pbar"]) == 0
