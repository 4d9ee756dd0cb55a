import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dataset_conversion.synthetic import main, make_synthetic_dataset
from dataset_conversion.synthetic_domains import SITES, TISSUE_ORDER, field_of_view, render_case, render_intensities
from samdg.dataset.integrity import verify_dataset
from samdg.dataset.raw import load_raw_dataset
from samdg.imageio import read_case, read_label

SHAPE = (32, 32, 8)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "Dataset901_Synthetic"
    dataset_json = make_synthetic_dataset(folder, num_domains=3, cases_per_domain=2, test_cases_per_domain=1,
                                          shape=SHAPE, seed=3)
    return folder, dataset_json


def _load(folder, case_id, split="Tr"):
    image = nib.load(str(folder / f"images{split}" / f"{case_id}_0000.nii.gz"))
    label = nib.load(str(folder / f"labels{split}" / f"{case_id}.nii.gz"))
    return image, label


def test_dataset_json_lists_every_case_with_its_domain(synthetic):
    folder, dataset_json = synthetic
    on_disk = json.loads((folder / "dataset.json").read_text())
    assert on_disk == dataset_json
    assert on_disk["channel_names"] == {"0": "MR"} and on_disk["file_ending"] == ".nii.gz"
    assert on_disk["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
    assert on_disk["numTraining"] == 6 and on_disk["numTest"] == 3
    assert on_disk["domains"]["synth_siteB_002"] == "siteB" and len(on_disk["domains"]) == 9
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"synth_site{s}_002_0000.nii.gz" for s in "ABC"]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"synth_site{s}_002.nii.gz" for s in "ABC"]
    assert not [p for p in folder.rglob(".*")], "no temp files may be left behind"


def test_loads_as_raw_dataset_without_problems(synthetic):
    folder, _ = synthetic
    raw = load_raw_dataset(folder)
    assert raw.domain_names == ["siteA", "siteB", "siteC"]
    assert len(raw.training_cases) == 6 and len(raw.test_cases) == 3
    assert verify_dataset(raw) == []


def test_sites_differ_in_spacing_orientation_shape_and_dtype_as_designed(synthetic):
    folder, _ = synthetic
    shapes = set()
    for site in SITES[:3]:
        image, label = _load(folder, f"synth_{site.name}_000")
        world_axis = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        assert np.allclose(image.header.get_zooms(), [site.spacing[world_axis[c]] for c in site.orientation])
        assert "".join(nib.aff2axcodes(image.affine)) == site.orientation
        assert np.allclose(image.affine, label.affine) and image.shape == label.shape
        assert image.get_data_dtype() == np.dtype(site.dtype)
        shapes.add(image.shape)
    assert len(shapes) == 3


def test_canonical_reading_shows_the_same_anatomy_at_every_site(synthetic):
    """LPS and LAS files must be flipped by the reader: liver on the right (+X), spleen on the left."""
    folder, _ = synthetic
    for site in SITES[:3]:
        for index in range(3):
            split = "Tr" if index < 2 else "Ts"
            case = f"synth_{site.name}_{index:03d}"
            label, _ = read_label(folder / f"labels{split}" / f"{case}.nii.gz")
            assert set(np.unique(label)) == {0, 1, 2, 3}, case
            width = label.shape[2]
            liver_x = np.argwhere(label == 1)[:, 2].mean() / width
            spleen_x = np.argwhere(label == 3)[:, 2].mean() / width
            assert liver_x > 0.55 and spleen_x < 0.45, case


def test_sites_differ_in_contrast_and_value_range_as_designed(synthetic):
    folder, _ = synthetic
    stats = {}
    for site in SITES[:3]:
        image, _ = read_case([folder / "imagesTr" / f"synth_{site.name}_000_0000.nii.gz"])
        label, _ = read_label(folder / "labelsTr" / f"synth_{site.name}_000.nii.gz")
        stats[site.name] = {"liver": image[0][label == 1].mean(), "kidney": image[0][label == 2].mean(),
                            "max": image.max()}
    # T1 sites: liver brighter than kidney; the T2 site (siteC) inverts it.
    assert stats["siteA"]["liver"] > stats["siteA"]["kidney"] and stats["siteB"]["liver"] > stats["siteB"]["kidney"]
    assert stats["siteC"]["liver"] < stats["siteC"]["kidney"]
    # Stored value ranges differ by orders of magnitude (int16 ~1e3, uint16 ~4e3, float ~1).
    assert stats["siteC"]["max"] < 2 < 500 < stats["siteA"]["max"] < 1500 < stats["siteB"]["max"]


def test_kidneys_lie_in_perirenal_fat_that_makes_them_visible_on_t1():
    """On T1 a kidney is about as dark as muscle: the fat around it is what sets it apart (as in real scans)."""
    image, label, _ = render_case(SITES[0], field_of_view((96, 96, 8)), np.random.default_rng([0, 0, 0]))
    kidney = label == 2
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    rim = ndimage.binary_dilation(kidney, in_plane, iterations=2) & ~kidney & (label == 0)
    assert kidney.sum() > 50 and rim.sum() > 50
    kidney_mean, rim_mean = image[kidney].mean(), image[rim].mean()
    # T1 (x1000): kidney 380, fat 920, muscle 420. The 2-voxel rim is fat with some partial volume (~1.6x the
    # kidney); without the fat it would be muscle (~1.1x).
    assert rim_mean > 1.35 * kidney_mean, (kidney_mean, rim_mean)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sites_differ_in_bias_field_and_noise_as_designed(seed):
    """One uniform tissue block rendered by each site: low-frequency shading (bias) and high-frequency noise."""
    tissue = np.full((40, 40, 10), TISSUE_ORDER.index("liver"), np.uint8)
    anatomy = {"contrast_jitter": {t: 1.0 for t in TISSUE_ORDER}}
    shading, noise = {}, {}
    for site in SITES[:3]:
        image = render_intensities(tissue, site, anatomy, np.random.default_rng(seed)).astype(np.float64)
        smooth = ndimage.gaussian_filter(image, 3)
        shading[site.name] = np.percentile(smooth, 95) / np.percentile(smooth, 5)
        noise[site.name] = (image - ndimage.gaussian_filter(image, 1.5)).std() / image.mean()
    assert shading["siteA"] < 1.2 < 1.8 < shading["siteB"]  # siteB: the strong bias field
    assert noise["siteC"] > 3 * noise["siteA"]  # siteC: the noisy site


def test_same_seed_same_voxels_other_seed_other_voxels(tmp_path, synthetic):
    folder, _ = synthetic
    again = make_synthetic_dataset(tmp_path / "again", num_domains=3, cases_per_domain=2, test_cases_per_domain=1,
                                   shape=SHAPE, seed=3)
    other = make_synthetic_dataset(tmp_path / "other", num_domains=1, cases_per_domain=1, test_cases_per_domain=0,
                                   shape=SHAPE, seed=4)
    assert again["domains"] == synthetic[1]["domains"]
    for case in ("synth_siteA_000", "synth_siteC_001"):
        first, second = _load(folder, case), _load(tmp_path / "again", case)
        assert np.array_equal(first[0].get_fdata(), second[0].get_fdata())
        assert np.array_equal(first[1].get_fdata(), second[1].get_fdata())
        assert np.allclose(first[0].affine, second[0].affine)
    assert other["numTraining"] == 1
    first, other_first = _load(folder, "synth_siteA_000")[0], _load(tmp_path / "other", "synth_siteA_000")[0]
    assert not np.array_equal(first.get_fdata(), other_first.get_fdata())


def test_ct_modality_gives_hounsfield_units(tmp_path):
    dataset_json = make_synthetic_dataset(tmp_path / "ct", num_domains=2, cases_per_domain=1, test_cases_per_domain=0,
                                          shape=SHAPE, modality="CT")
    assert dataset_json["channel_names"] == {"0": "CT"}
    image, geometry = read_case([tmp_path / "ct" / "imagesTr" / "synth_siteB_000_0000.nii.gz"])
    label, _ = read_label(tmp_path / "ct" / "labelsTr" / "synth_siteB_000.nii.gz")
    assert image.min() >= -1024 and (image < -900).mean() > 0.2  # air around the body
    assert 20 < np.median(image[0][label == 1]) < 140  # liver, soft-tissue HU
    assert nib.load(str(tmp_path / "ct" / "imagesTr" / "synth_siteB_000_0000.nii.gz")).get_data_dtype() == np.int16


def test_cli_writes_to_raw_root_and_refuses_to_overwrite_silently(samdg_roots, capsys):
    args = ["-d", "901", "--domains", "2", "--cases-per-domain", "1", "--test-cases-per-domain", "0",
            "--shape", "16x16x4"]
    assert main(args) == 0
    folder = samdg_roots["raw"] / "Dataset901_Synthetic"
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Dataset901_Synthetic: already exists; pass --overwrite" in error and "Traceback" not in error
    assert main([*args, "--overwrite", "--cases-per-domain", "2"]) == 0
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 4
    assert len(list((folder / "imagesTr").iterdir())) == 4


def test_cli_overwrite_never_deletes_a_dataset_it_did_not_make(samdg_roots, capsys):
    folder = samdg_roots["raw"] / "Dataset901_Synthetic"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(SystemExit):
        main(["-d", "901", "--overwrite", "--shape", "16x16x4"])
    assert "not made by samdg_make_synthetic" in capsys.readouterr().err
    assert (folder / "dataset.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--domains", "7"], "--domains must be between 1 and 6"),
        (["--shape", "32x32"], "expected three integers"),
        (["--shape", "8x8x8"], "--shape must be three sizes of at least 16x16x4"),
        (["--cases-per-domain", "0"], "--cases-per-domain must be >= 1"),
    ],
)
def test_cli_rejects_bad_arguments_with_one_line(args, message, samdg_roots, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-d", "902", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(samdg_roots["raw"].iterdir())


def test_cli_rejects_an_id_used_by_another_dataset(samdg_roots, capsys):
    (samdg_roots["raw"] / "Dataset901_Other").mkdir()
    with pytest.raises(SystemExit):
        main(["-d", "901", "--shape", "16x16x4"])
    assert "dataset id 901 is already used by Dataset901_Other" in capsys.readouterr().err
