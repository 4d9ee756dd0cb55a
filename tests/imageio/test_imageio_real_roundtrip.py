"""samdg.imageio on the real CT (RAS on disk) / MR (LPS on disk) pair: exact round trips and canonical orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from samdg.imageio import read_case, read_header, read_image, read_label, write_image, write_label
from samdg.imageio.geometry import from_canonical

PAIRS = [("example_ct_sm.nii.gz", "example_seg.nii.gz", "RAS"),
         ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "LPS")]


@pytest.mark.parametrize("image_name, label_name, codes", PAIRS)
def test_read_write_round_trip_is_exact(shared_data, tmp_path, image_name, label_name, codes):
    original_image = nib.load(str(shared_data / image_name))
    original_label = nib.load(str(shared_data / label_name))
    assert "".join(nib.aff2axcodes(original_image.affine)) == codes

    image, geometry = read_case([shared_data / image_name])
    write_image(image[0], geometry, tmp_path / "image.nii.gz")
    label, label_geometry = read_label(shared_data / label_name)
    write_label(label, label_geometry, tmp_path / "label.nii.gz")

    for original, path in ((original_image, "image.nii.gz"), (original_label, "label.nii.gz")):
        written = nib.load(str(tmp_path / path))
        assert written.shape == original.shape
        assert np.array_equal(written.affine, original.affine)
        assert np.array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj))
        for field in ("qform_code", "sform_code", "pixdim", "xyzt_units"):
            assert np.array_equal(written.header[field], original.header[field]), field
    # reading the written files again gives the same canonical arrays and geometry
    again, again_geometry = read_case([tmp_path / "image.nii.gz"])
    assert np.array_equal(again, image) and again_geometry.same_grid(geometry)
    assert read_header(tmp_path / "label.nii.gz")[0] == label.shape


def _world(geometry, index_zyx) -> np.ndarray:
    """RAS world position of a canonical voxel index, via the inverse reorientation and the file's affine."""
    marker = np.zeros(geometry.canonical_shape, np.uint8)
    marker[tuple(index_zyx)] = 1
    file_index = np.argwhere(from_canonical(marker, np.asarray(geometry.ornt)))[0]
    return (np.asarray(geometry.original_affine) @ np.append(file_index, 1.0))[:3]


@pytest.mark.parametrize("image_name", ["example_ct_sm.nii.gz", "example_mr_sm.nii.gz"])
def test_canonical_axes_point_superior_anterior_right(shared_data, image_name):
    _, geometry = read_image(shared_data / image_name)
    origin = _world(geometry, (1, 1, 1))
    for axis, ras_axis in ((0, 2), (1, 1), (2, 0)):  # canonical Z,Y,X = S,A,R
        step = [1, 1, 1]
        step[axis] += 1
        delta = _world(geometry, step) - origin
        assert delta[ras_axis] == pytest.approx(geometry.spacing[axis], rel=1e-3)
        assert np.abs(np.delete(delta, ras_axis)).max() < 1e-3 * geometry.spacing[axis]


def test_ct_and_mr_show_the_same_anatomy_the_same_way_round(shared_data):
    """Liver (5) lies on the patient's right, spleen (1) on the left. X grows towards R in (S,A,R) arrays, so the
    liver has the larger X index in both files, although one is stored RAS and the other LPS."""
    for label_name in ("example_seg.nii.gz", "example_seg_mr.nii.gz"):
        label, _ = read_label(shared_data / label_name)
        liver_x = np.argwhere(label == 5)[:, 2].mean()
        spleen_x = np.argwhere(label == 1)[:, 2].mean()
        assert liver_x > spleen_x, label_name
        liver_z = np.argwhere(label == 5)[:, 0].mean()
        kidney_z = np.argwhere(label == 2)[:, 0].mean()
        assert liver_z > kidney_z, f"{label_name}: the liver sits above the right kidney (S grows with Z)"


@pytest.mark.parametrize("ending", [".nrrd", ".mha"])
def test_simpleitk_formats_round_trip_and_agree_with_nifti(shared_data, tmp_path, ending):
    sitk = pytest.importorskip("SimpleITK")
    source = sitk.ReadImage(str(shared_data / "example_mr_sm.nii.gz"))
    path = tmp_path / f"mr{ending}"
    sitk.WriteImage(source, str(path))
    from_nifti, _ = read_image(shared_data / "example_mr_sm.nii.gz")
    array, geometry = read_image(path)
    assert np.array_equal(array, from_nifti), "same anatomy per index whatever the container"
    out = tmp_path / f"out{ending}"
    write_image(array[0], geometry, out)
    written = sitk.ReadImage(str(out))
    assert written.GetSpacing() == source.GetSpacing() and written.GetOrigin() == source.GetOrigin()
    assert written.GetDirection() == source.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(source).astype(np.float32))


def _png(tmp_path, rgb: bool) -> np.ndarray:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 17, 3) if rgb else (12, 17), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    return pixels


@pytest.mark.parametrize("rgb", [False, True])
def test_png_read_and_label_round_trip(tmp_path, rgb):
    pixels = _png(tmp_path, rgb)
    array, geometry = read_image(tmp_path / "in.png")
    assert array.shape == ((3, 1, 12, 17) if rgb else (1, 1, 12, 17))
    assert np.array_equal(array[:, 0], np.moveaxis(pixels, -1, 0) if rgb else pixels[None])
    assert geometry.spacing[0] > 100 * max(geometry.spacing[1:]), "2D: a huge fake spacing on the dummy axis"
    labels = (pixels if not rgb else pixels[..., 0]) % 3
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "label.png")
    label, label_geometry = read_label(tmp_path / "label.png")
    assert label.shape == (1, 12, 17)
    write_label(label, label_geometry, tmp_path / "label_out.png")
    with Image.open(tmp_path / "label_out.png") as written:
        assert np.array_equal(np.asarray(written), labels)


@pytest.mark.parametrize("rgb", [False, True])
def test_png_image_write_round_trip(tmp_path, rgb):
    pixels = _png(tmp_path, rgb)
    array, geometry = read_image(tmp_path / "in.png")
    write_image(array if rgb else array[0], geometry, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as written:
        assert np.array_equal(np.asarray(written), pixels)
