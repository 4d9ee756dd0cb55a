import json

import nibabel as nib
import numpy as np
import pytest

from samdg.dataset import list_image_folder, load_raw_dataset
from samdg.errors import SamdgError


def _write(path, shape=(8, 8, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))


def _dataset(root, domains=None, n=2, channels=("T2", "ADC")):
    folder = root / "Dataset005_Prostate"
    for i in range(n):
        for c in range(len(channels)):
            _write(folder / "imagesTr" / f"case{i}_{c:04d}.nii.gz")
        _write(folder / "labelsTr" / f"case{i}.nii.gz")
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": n, "file_ending": ".nii.gz"}
    if domains is not None:
        meta["domains"] = domains
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_lists_cases_channels_and_domains(tmp_path):
    folder = _dataset(tmp_path, domains={"case0": "RUNMC", "case1": "BMC"})
    raw = load_raw_dataset(folder)
    assert sorted(raw.training_cases) == ["case0", "case1"]
    case = raw.training_cases["case0"]
    assert [p.rsplit("/", 1)[1] for p in case.image_paths] == ["case0_0000.nii.gz", "case0_0001.nii.gz"]
    assert case.label_path.endswith("labelsTr/case0.nii.gz") and case.domain == "RUNMC"
    assert raw.domain_names == ["BMC", "RUNMC"] and raw.problems == []
    assert raw.labels.names == ("PZ", "TZ")


def test_no_domain_map_means_one_default_domain(tmp_path):
    raw = load_raw_dataset(_dataset(tmp_path))
    assert set(raw.domains.values()) == {"default"} and not raw.has_domain_map


def test_listing_problems_are_collected_not_raised(tmp_path):
    folder = _dataset(tmp_path, domains={"case0": "A"}, n=2)
    (folder / "imagesTr" / "case1_0001.nii.gz").unlink()
    _write(folder / "labelsTr" / "orphan.nii.gz")
    raw = load_raw_dataset(folder)
    text = "\n".join(raw.problems)
    assert "case1_0001.nii.gz: missing channel 1" in text
    assert "orphan.nii.gz: label has no image" in text
    assert "case case1 (imagesTr) is missing from the 'domains' map" in text


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("labels"), "missing required key"),
        (lambda m: m.update(file_ending=".jpg"), "file_ending '.jpg' is not supported"),
        (lambda m: m.update(domains=["a"]), "'domains' must map"),
        (lambda m: m.update(channel_names={"0": 5}), "channel_names must be a non-empty object of names"),
        (lambda m: m.update(channel_names=["CT"]), "channel_names must be a non-empty object of names"),
    ],
)
def test_bad_dataset_json(tmp_path, change, message):
    folder = _dataset(tmp_path)
    meta = json.loads((folder / "dataset.json").read_text())
    change(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SamdgError, match=message):
        load_raw_dataset(folder)


def test_invalid_json_names_the_file(tmp_path):
    folder = _dataset(tmp_path)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(SamdgError, match="dataset.json: not valid JSON"):
        load_raw_dataset(folder)


def test_prediction_folder_listing(tmp_path):
    folder = _dataset(tmp_path)
    cases = list_image_folder(folder / "imagesTr", ".nii.gz", 2)
    assert sorted(cases) == ["case0", "case1"]
    with pytest.raises(SamdgError, match="lacks channel file"):
        list_image_folder(folder / "imagesTr", ".nii.gz", 3)
    with pytest.raises(SamdgError, match="has channel file.* _0001 beyond the model's 1 channel"):
        list_image_folder(folder / "imagesTr", ".nii.gz", 1)


def test_nnunet_rgb_convention_is_one_file_per_case(tmp_path):
    from PIL import Image

    folder = tmp_path / "Dataset010_Fundus"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "imagesTr" / "eye_0000.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labelsTr" / "eye.png")
    meta = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "disc": 1},
            "numTraining": 1, "file_ending": ".png"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    raw = load_raw_dataset(folder)
    assert raw.problems == [] and len(raw.training_cases["eye"].image_paths) == 1


def test_a_broken_link_among_images_to_predict_is_named(tmp_path):
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(folder / "a_0000.nii.gz"))
    (folder / "b_0000.nii.gz").symlink_to(tmp_path / "moved" / "b_0000.nii.gz")
    with pytest.raises(SamdgError, match=f"^broken link: {folder / 'b_0000.nii.gz'} \\(points to "):
        list_image_folder(folder, ".nii.gz", 1)
