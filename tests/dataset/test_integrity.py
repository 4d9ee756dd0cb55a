import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion.synthetic import make_synthetic_dataset
from samdg.dataset.integrity import check_integrity_or_raise, grid_differences, verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.imageio import read_header

CASE = "synth_siteA_000"
OTHER = "synth_siteB_001"


@pytest.fixture(scope="module")
def valid_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity") / "Dataset901_Synthetic"
    make_synthetic_dataset(folder, num_domains=2, cases_per_domain=2, test_cases_per_domain=1, shape=(16, 16, 4),
                           seed=1)
    return folder


@pytest.fixture
def dataset(valid_dataset, samdg_roots):
    folder = samdg_roots["raw"] / valid_dataset.name
    shutil.copytree(valid_dataset, folder)
    return folder


def _image(folder, case=CASE, channel=0, split="Tr"):
    return folder / f"images{split}" / f"{case}_{channel:04d}.nii.gz"


def _label(folder, case=CASE, split="Tr"):
    return folder / f"labels{split}" / f"{case}.nii.gz"


def _rewrite(path, change_data=None, change_affine=None, dtype=None):
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    affine = image.affine.copy()
    data = change_data(data) if change_data else data
    affine = change_affine(affine) if change_affine else affine
    out = nib.Nifti1Image(data.astype(dtype or data.dtype), affine)
    nib.save(out, str(path))


def _edit_json(folder, change):
    meta = json.loads((folder / "dataset.json").read_text())
    change(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _snapshot(folder):
    return {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def _problems_of(folder, samdg_roots, capsys):
    """Run samdg_plan_and_preprocess as a user would: it must exit 2 with every problem listed, no traceback, and
    leave the raw folder as it was and the preprocessed and results roots empty."""
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    before = _snapshot(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        plan_and_preprocess(["-d", folder.name, "-np", "1", "--no_pbar"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"samdg: error: raw dataset {folder} failed the integrity check")
    assert "Traceback" not in message
    assert _snapshot(folder) == before
    assert not any(samdg_roots["preprocessed"].iterdir()) and not any(samdg_roots["results"].iterdir())
    return message.strip()


def test_the_generated_dataset_is_clean(dataset):
    assert verify_dataset(load_raw_dataset(dataset)) == []
    check_integrity_or_raise(load_raw_dataset(dataset), num_workers=1)


def test_missing_channel_file(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m["channel_names"].update({"1": "MR2"}))
    raw = load_raw_dataset(dataset)
    for case in [*raw.training_cases.values(), *raw.test_cases.values()]:
        if case.case_id != CASE:
            shutil.copyfile(case.image_paths[0], case.image_paths[0].replace("_0000.nii.gz", "_0001.nii.gz"))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_image(dataset, channel=1)}: missing channel 1 of case {CASE}" in message
    assert message.count("\n") == 1  # exactly one problem


def test_label_shape_mismatch(dataset, samdg_roots, capsys):
    _rewrite(_label(dataset), change_data=lambda d: d[:-2])
    message = _problems_of(dataset, samdg_roots, capsys)
    assert (f"{_label(dataset)}: label grid differs from image {_image(dataset)}: "
            "shape (14, 16, 4) vs (16, 16, 4)") in message


@pytest.mark.parametrize(
    "change_affine, what",
    [
        (lambda a: a @ np.diag([1.0, 1.0, 1.5, 1.0]), "spacing"),
        (lambda a: a + np.pad(np.array([[0.0], [0.0], [2.0]]), ((0, 1), (3, 0))), "origin"),
        (lambda a: np.diag([-1.0, 1.0, 1.0, 1.0]) @ a, "direction"),
    ],
)
def test_label_geometry_mismatch(dataset, samdg_roots, capsys, change_affine, what):
    _rewrite(_label(dataset), change_affine=change_affine)
    message = _problems_of(dataset, samdg_roots, capsys)
    (line,) = [line for line in message.splitlines() if str(_label(dataset)) in line]
    assert f"{_label(dataset)}: label grid differs from image {_image(dataset)}: " in line and f"{what} (" in line


def test_channels_on_different_grids(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m["channel_names"].update({"1": "MR2"}))
    for path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")) + sorted(
            (dataset / "imagesTs").glob("*_0000.nii.gz")):
        shutil.copyfile(path, str(path).replace("_0000", "_0001"))
    _rewrite(_image(dataset, OTHER, channel=1), change_affine=lambda a: a @ np.diag([1.01, 1.0, 1.0, 1.0]))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert (f"{_image(dataset, OTHER, channel=1)}: grid differs from channel file {_image(dataset, OTHER)}: "
            "spacing") in message


def test_tiny_header_rounding_is_tolerated(dataset):
    _rewrite(_label(dataset), change_affine=lambda a: a @ np.diag([1.0 + 2e-5, 1.0, 1.0, 1.0]))
    assert verify_dataset(load_raw_dataset(dataset)) == []


def test_undeclared_label_values(dataset, samdg_roots, capsys):
    def paint(data):
        data = data.copy()
        data[0, 0, 0], data[1, 0, 0] = 7, 9
        return data

    _rewrite(_label(dataset, OTHER), change_data=paint)
    message = _problems_of(dataset, samdg_roots, capsys)
    assert (f"{_label(dataset, OTHER)}: label value(s) 7, 9 not declared in dataset.json 'labels' "
            "(declared: 0, 1, 2, 3)") in message


def test_non_integer_label_values(dataset, samdg_roots, capsys):
    _rewrite(_label(dataset), change_data=lambda d: d + 0.5, dtype=np.float32)
    assert f"{_label(dataset)}: label map contains non-integer values" in _problems_of(dataset, samdg_roots, capsys)


def test_nan_and_inf_intensities(dataset, samdg_roots, capsys):
    def spoil(data):
        data = data.astype(np.float32)
        data[0, 0, :2] = np.nan
        data[1, 1, 1] = np.inf
        return data

    _rewrite(_image(dataset, OTHER, split="Tr"), change_data=spoil)
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_image(dataset, OTHER)}: contains 2 NaN and 1 infinite voxel(s)" in message


def test_4d_image_where_3d_is_expected(dataset, samdg_roots, capsys):
    _rewrite(_image(dataset), change_data=lambda d: np.stack([d, d], axis=-1))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_image(dataset)}: is 4D (shape (16, 16, 4, 2)), expected a 3D volume" in message


def test_empty_and_unreadable_files(dataset, samdg_roots, capsys):
    _image(dataset).write_bytes(b"")
    _label(dataset, OTHER).write_bytes(b"this is not a nifti file")
    truncated = _image(dataset, "synth_siteB_002", split="Ts")
    truncated.write_bytes(truncated.read_bytes()[:200])
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_image(dataset)}: file is empty (0 bytes)" in message
    assert f"{_label(dataset, OTHER)}: cannot be read" in message
    assert f"{truncated}: " in message


def test_label_without_image_and_image_without_label(dataset, samdg_roots, capsys):
    shutil.copyfile(_label(dataset), _label(dataset, "ghost"))
    _label(dataset, OTHER).unlink()
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_label(dataset, 'ghost')}: label has no image" in message
    assert f"{_label(dataset, OTHER)}: label file missing for case {OTHER}" in message


def test_case_in_both_training_and_test(dataset, samdg_roots, capsys):
    shutil.copyfile(_image(dataset), _image(dataset, split="Ts"))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"case id {CASE} is in both imagesTr and imagesTs" in message


def test_case_missing_from_domains_map(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m["domains"].pop("synth_siteB_002"))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{dataset / 'dataset.json'}: case synth_siteB_002 (imagesTs) is missing from the 'domains' map" in message


def test_unknown_cases_in_domains_map_only_warn(dataset, capsys):
    _edit_json(dataset, lambda m: m["domains"].update({"retired_case": "siteZ"}))
    raw = load_raw_dataset(dataset)
    assert verify_dataset(raw) == []
    check_integrity_or_raise(raw)
    warning = capsys.readouterr().err
    assert "samdg: warning:" in warning and "'domains' names 1 case(s) that have no image: retired_case" in warning


def test_empty_domain_name_is_an_error(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m["domains"].update({CASE: ""}))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"'domains' entries must be non-empty domain names; not so for {CASE}" in message


def test_every_problem_is_reported_at_once_one_per_line(dataset, samdg_roots, capsys):
    _rewrite(_label(dataset), change_data=lambda d: d[:-2])
    _rewrite(_label(dataset, OTHER), change_data=lambda d: np.where(d == 3, 5, d))
    _image(dataset, "synth_siteA_001").write_bytes(b"")
    _edit_json(dataset, lambda m: m["domains"].pop("synth_siteB_000"))
    message = _problems_of(dataset, samdg_roots, capsys)
    lines = message.splitlines()
    assert lines[0] == f"samdg: error: raw dataset {dataset} failed the integrity check with 4 problem(s):"
    assert len(lines) == 5
    for needle in (str(_label(dataset)), str(_label(dataset, OTHER)), str(_image(dataset, "synth_siteA_001")),
                   "synth_siteB_000"):
        assert sum(needle in line for line in lines[1:]) == 1, needle
    serial = verify_dataset(load_raw_dataset(dataset), num_workers=1)
    assert serial == verify_dataset(load_raw_dataset(dataset), num_workers=3)


def test_grid_differences_names_every_part(dataset):
    _, reference = read_header(_image(dataset))
    _rewrite(_label(dataset), change_data=lambda d: d[:, :-1],
             change_affine=lambda a: np.diag([1, -1, 1, 1]) @ a @ np.diag([2, 1, 1, 1]))
    _, moved = read_header(_label(dataset))
    parts = [d.split(" ")[0] for d in grid_differences(moved, reference)]
    assert parts == ["shape", "spacing", "origin", "direction"]


def test_2d_rgb_dataset_is_checked_too(samdg_roots, capsys):
    from PIL import Image

    folder = samdg_roots["raw"] / "Dataset902_Photos"
    for split in ("imagesTr", "labelsTr"):
        (folder / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
            folder / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(rng.integers(0, 2, (12, 10), dtype=np.uint8)).save(folder / "labelsTr" / f"{case}.png")
    (folder / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "RGB"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
         "file_ending": ".png"}))
    assert verify_dataset(load_raw_dataset(folder)) == []
    Image.fromarray(np.full((12, 11), 2, np.uint8)).save(folder / "labelsTr" / "b.png")
    message = _problems_of(folder, samdg_roots, capsys)
    assert "b.png: label value(s) 2 not declared" in message
    assert "b.png: label grid differs from image" in message and "shape (12, 11) vs (12, 10)" in message



def _refused(folder, samdg_roots, capsys):
    """Run samdg_plan_and_preprocess: exit 2 with one line (no traceback), raw folder unchanged, nothing written."""
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    before = _snapshot(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        plan_and_preprocess(["-d", folder.name, "-np", "1", "--no_pbar"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("samdg: error: ") and "\n" not in message and "Traceback" not in message
    assert _snapshot(folder) == before
    assert not any(samdg_roots["preprocessed"].iterdir()) and not any(samdg_roots["results"].iterdir())
    return message


def _add_case_copy(folder, source, new_id, domain="siteA"):
    """A new training case ``new_id`` with the files of case ``source``, declared in dataset.json."""
    shutil.copyfile(_image(folder, source), _image(folder, new_id))
    shutil.copyfile(_label(folder, source), _label(folder, new_id))
    _edit_json(folder, lambda m: (m["domains"].update({new_id: domain}), m.update(numTraining=m["numTraining"] + 1)))


def test_label_value_beyond_int16_is_refused_naming_dataset_json(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m["labels"].update({"spleen": 40000}))
    _rewrite(_label(dataset), change_data=lambda d: np.where(d == 3, 40000, d.astype(np.int32)))
    message = _refused(dataset, samdg_roots, capsys)
    assert (f"{dataset / 'dataset.json'}: label 'spleen' has the value 40000; "
            "label values must be at most 32767") in message


def test_largest_int16_label_value_is_preprocessed_unchanged(dataset, samdg_roots, capsys):
    from samdg.cli.plan_and_preprocess import main as plan_and_preprocess

    _edit_json(dataset, lambda m: m["labels"].update({"spleen": 32767}))
    for path in [*(dataset / "labelsTr").glob("*.nii.gz"), *(dataset / "labelsTs").glob("*.nii.gz")]:
        _rewrite(path, change_data=lambda d: np.where(d == 3, 32767, d.astype(np.int16)))
    assert plan_and_preprocess(["-d", dataset.name, "-np", "1", "--no_pbar", "--variant", "tiny_vit_test"]) == 0
    seen = set()
    for path in (dataset / "labelsTr").glob("*.nii.gz"):
        seg = np.load(samdg_roots["preprocessed"] / dataset.name / "samdgPlans_2d" / f"{path.name[:-7]}_seg.npy")
        raw_values = set(np.unique(np.asanyarray(nib.load(str(path)).dataobj)).tolist())
        assert set(np.unique(seg).tolist()) == raw_values
        seen |= raw_values
    assert 32767 in seen


def test_case_ids_whose_preprocessed_files_coincide_are_refused(dataset, samdg_roots, capsys):
    _add_case_copy(dataset, OTHER, f"{CASE}_seg")
    message = _problems_of(dataset, samdg_roots, capsys)
    assert (f"{dataset / 'dataset.json'}: case ids {CASE} and {CASE}_seg collide in the preprocessed folder "
            f"(both become {CASE}_seg.npy); rename one of them") in message


def test_channel_names_keys_must_be_channel_indices(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m.update(channel_names={"zero": "MR"}))
    message = _refused(dataset, samdg_roots, capsys)
    assert f"{dataset / 'dataset.json'}: channel_names keys must be the channel indices 0 " in message
    assert "'zero'" in message


def test_num_training_must_be_an_integer(dataset, samdg_roots, capsys):
    _edit_json(dataset, lambda m: m.update(numTraining="4"))
    message = _refused(dataset, samdg_roots, capsys)
    assert f"{dataset / 'dataset.json'}: numTraining must be an integer, got '4'" in message


def test_complex_valued_image_is_refused_naming_the_file(dataset, samdg_roots, capsys):
    _rewrite(_image(dataset), change_data=lambda d: d + 1j * d, dtype=np.complex64)
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"{_image(dataset)}: holds complex-valued voxels (complex64)" in message


@pytest.mark.parametrize("value", [0, 500])
def test_constant_image_with_labelled_foreground_is_refused(dataset, samdg_roots, capsys, value):
    _rewrite(_image(dataset), change_data=lambda d: np.full_like(d, value))
    message = _problems_of(dataset, samdg_roots, capsys)
    assert (f"{_image(dataset)}: image has one constant intensity everywhere, "
            f"but its label {_label(dataset)} holds foreground") in message
    assert message.count("\n") == 1


def test_one_constant_channel_among_informative_ones_only_warns(dataset, capsys):
    _edit_json(dataset, lambda m: m["channel_names"].update({"1": "T2"}))
    for path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")) + sorted(
            (dataset / "imagesTs").glob("*_0000.nii.gz")):
        shutil.copyfile(path, str(path).replace("_0000", "_0001"))
    _rewrite(_image(dataset, channel=1), change_data=lambda d: np.zeros_like(d))  # a zero-filled missing sequence
    check_integrity_or_raise(load_raw_dataset(dataset), num_workers=1)
    warning = capsys.readouterr().err
    assert f"samdg: warning: {_image(dataset, channel=1)}: image has one constant intensity everywhere" in warning


@pytest.mark.parametrize("folder_name", ["imagesTr", "labelsTr"])
def test_dangling_symlink_is_reported_as_broken_link(dataset, samdg_roots, capsys, folder_name):
    path = _image(dataset) if folder_name == "imagesTr" else _label(dataset)
    path.unlink()
    path.symlink_to(dataset / "gone" / path.name)
    message = _problems_of(dataset, samdg_roots, capsys)
    assert f"broken link: {path} (points to {dataset / 'gone' / path.name}, which does not exist)" in message
    assert message.count("\n") == 1  # not also "label has no image" or "label file missing"


def test_rgb_dataset_with_one_grey_image_names_it(samdg_roots, capsys):
    from PIL import Image

    folder = samdg_roots["raw"] / "Dataset904_Photos"
    for split in ("imagesTr", "labelsTr"):
        (folder / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in ("a", "b", "c"):
        pixels = rng.integers(0, 255, (12, 10) if case == "b" else (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(rng.integers(0, 2, (12, 10), dtype=np.uint8)).save(folder / "labelsTr" / f"{case}.png")
    (folder / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "RGB"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 3,
         "file_ending": ".png"}))
    message = _problems_of(folder, samdg_roots, capsys)
    assert (f"{folder / 'imagesTr' / 'b_0000.png'}: is grey (1 channel) "
            "while the dataset's other images are RGB (3 channels)") in message
    assert message.count("\n") == 1
