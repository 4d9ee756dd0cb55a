"""Metrics against values computed by hand, and surface distances against a brute-force implementation."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from samdg.evaluation.metrics import (
    assd,
    compute_metrics,
    confusion_counts,
    dice,
    hd95,
    iou,
    surface,
    surface_distances,
)


def _volume(shape=(8, 8, 8)):
    return np.zeros(shape, dtype=bool)


def test_dice_and_iou_by_hand():
    reference, prediction = _volume((1, 4, 4)), _volume((1, 4, 4))
    reference[0, 0, :4] = True  # 4 voxels
    prediction[0, 0, 1:4] = True  # 3 of them ...
    prediction[0, 1, 0:3] = True  # ... plus 3 outside
    assert dice(reference, prediction) == pytest.approx(2 * 3 / (4 + 6))
    assert iou(reference, prediction) == pytest.approx(3 / 7)
    counts = confusion_counts(reference, prediction)
    assert counts == {"tp": 3, "fp": 3, "fn": 1, "tn": 16 - 7, "n_ref": 4, "n_pred": 6}


def test_single_voxels_offset_along_anisotropic_z():
    reference, prediction = _volume(), _volume()
    reference[2, 5, 5] = True
    prediction[5, 5, 5] = True
    # three slices apart at 3 mm per slice
    assert hd95(reference, prediction, (3.0, 1.0, 1.0)) == pytest.approx(9.0)
    assert assd(reference, prediction, (3.0, 1.0, 1.0)) == pytest.approx(9.0)
    assert hd95(reference, prediction, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    prediction[:] = False
    prediction[3, 7, 7] = True  # offset (1, 2, 2) voxels
    assert hd95(reference, prediction, (3.0, 1.0, 0.5)) == pytest.approx(math.sqrt(9 + 4 + 1))


def test_cubes_offset_by_one_slice_with_spacing_3_1_1():
    """Two 3x3x3 cubes, the prediction one slice higher (hand count in the comments).

    Surfaces are the 26 non-centre voxels. Prediction -> reference: 16 voxels lie on the reference surface (0 mm),
    the bottom-face centre sits on the reference centre (1 mm in-plane to its neighbours), the top face (9 voxels)
    is one slice above the reference (3 mm). Reference -> prediction is the mirror image. Pooled: 32 x 0, 2 x 1,
    18 x 3 mm.
    """
    reference, prediction = _volume(), _volume()
    reference[2:5, 2:5, 2:5] = True
    prediction[3:6, 2:5, 2:5] = True
    metrics = compute_metrics(reference, prediction, (3.0, 1.0, 1.0))
    assert metrics["dice"] == pytest.approx(2 * 18 / 54)
    assert metrics["iou"] == pytest.approx(18 / 36)
    assert metrics["assd_mm"] == pytest.approx((2 * 1 + 18 * 3) / 52)
    assert metrics["hd95_mm"] == pytest.approx(3.0)  # 95th percentile index 48.45 of 52 sorted values is in the 3s
    isotropic = compute_metrics(reference, prediction, (1.0, 1.0, 1.0))
    assert isotropic["assd_mm"] == pytest.approx(20 / 52)
    directed = surface_distances(reference, prediction, (3.0, 1.0, 1.0))
    assert sorted(directed[0]) == [0.0] * 16 + [1.0] + [3.0] * 9


def test_hd95_pools_both_directions():
    """A 1-voxel reference inside a 5x5x5 prediction: the set mixes 1 directed distance with 98 others."""
    reference, prediction = _volume((7, 7, 7)), _volume((7, 7, 7))
    prediction[1:6, 1:6, 1:6] = True
    reference[3, 3, 3] = True
    to_reference, to_prediction = surface_distances(reference, prediction, (1, 1, 1))
    assert to_prediction.tolist() == [2.0]  # centre to the nearest face
    pooled = np.concatenate([to_reference, to_prediction])
    assert hd95(reference, prediction, (1, 1, 1)) == pytest.approx(np.percentile(pooled, 95))
    assert assd(reference, prediction, (1, 1, 1)) == pytest.approx(pooled.mean())
    assert to_reference.max() == pytest.approx(math.sqrt(12))  # a corner of the cube


def test_empty_masks_follow_the_documented_rules():
    empty, full = _volume(), _volume()
    full[2:4, 2:4, 2:4] = True
    both_empty = compute_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(both_empty[m]) for m in ("dice", "iou", "hd95_mm", "assd_mm"))
    for reference, prediction in ((full, empty), (empty, full)):
        one_empty = compute_metrics(reference, prediction, (1, 1, 1))
        assert one_empty["dice"] == 0.0 and one_empty["iou"] == 0.0
        assert math.isnan(one_empty["hd95_mm"]) and math.isnan(one_empty["assd_mm"])
    assert compute_metrics(full, empty, (1, 1, 1))["n_ref"] == 8
    assert compute_metrics(empty, full, (1, 1, 1))["n_pred"] == 8
    with pytest.raises(ValueError):
        surface_distances(full, empty, (1, 1, 1))


def test_valid_mask_removes_voxels_from_every_count():
    reference, prediction = _volume(), _volume()
    reference[2:4, 2:4, 2:4] = True
    prediction[2:4, 2:4, 2:6] = True  # 8 extra voxels, all of them ignored below
    valid = np.ones_like(reference)
    valid[:, :, 4:] = False
    metrics = compute_metrics(reference, prediction, (1, 1, 1), valid)
    assert metrics["dice"] == 1.0 and metrics["hd95_mm"] == 0.0 and metrics["fp"] == 0
    assert metrics["tn"] == int(valid.sum()) - 8
    assert compute_metrics(reference, prediction, (1, 1, 1))["dice"] == pytest.approx(16 / 24)


def test_single_slice_is_measured_in_plane():
    """(1,Y,X) with nnU-Net's fake spacing on the dummy axis: a 3x3 square against its centre pixel.

    In 2D the square's surface is the 8-pixel ring: 4 edge pixels at 1 pixel from the centre, 4 corners at sqrt(2).
    (Treated as 3D, every pixel of a one-slice mask would be surface, the centre included, giving a 0 distance.)
    """
    reference, prediction = _volume((1, 7, 7)), _volume((1, 7, 7))
    reference[0, 2:5, 2:5] = True
    prediction[0, 3, 3] = True
    spacing = (999.0 * 0.5, 0.5, 0.5)
    assert surface(reference[0]).sum() == 8
    distances = [0.5] + [0.5] * 4 + [0.5 * math.sqrt(2)] * 4
    assert assd(reference, prediction, spacing) == pytest.approx(np.mean(distances))
    assert hd95(reference, prediction, spacing) == pytest.approx(np.percentile(distances, 95))
    # anisotropic pixels: rows 2 mm, columns 0.5 mm
    to_reference, to_prediction = surface_distances(reference, prediction, (1.0, 2.0, 0.5))
    assert to_reference.tolist() == [0.5]
    assert sorted(to_prediction) == pytest.approx(sorted([2.0, 2.0, 0.5, 0.5] + [math.hypot(2.0, 0.5)] * 4))


def test_surface_includes_voxels_on_the_image_border():
    mask = np.ones((3, 4, 5), dtype=bool)
    shell = surface(mask)
    assert shell.sum() == mask.size - 1 * 2 * 3  # only the 1x2x3 interior is not surface


def _brute_force_surface(mask):
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            neighbour = np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
            inner &= neighbour
    return mask & ~inner


def test_surface_uses_face_neighbours_only():
    cube = np.zeros((7, 7, 7), dtype=bool)
    cube[1:6, 1:6, 1:6] = True
    assert surface(cube).sum() == 125 - 27
    cube[1, 1, 1] = False  # (2,2,2) now touches the outside only diagonally: still interior
    assert surface(cube).sum() == 125 - 27 - 1
    assert not surface(cube)[2, 2, 2]


@pytest.mark.parametrize("seed,density", [(0, 0.15), (1, 0.15), (2, 0.4), (3, 0.7), (4, 0.7), (5, 0.85)])
def test_surface_distances_match_brute_force(seed, density):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 12, size=3))
    spacing = tuple(rng.uniform(0.3, 4.0, size=3))
    reference = rng.random(shape) < density
    prediction = rng.random(shape) < density
    reference[0, 0, 0] = prediction[-1, -1, -1] = True
    to_reference, to_prediction = surface_distances(reference, prediction, spacing)
    coordinates = [np.argwhere(_brute_force_surface(m)) * np.asarray(spacing) for m in (reference, prediction)]
    pairwise = cdist(coordinates[1], coordinates[0])  # prediction surface x reference surface
    assert np.sort(to_reference) == pytest.approx(np.sort(pairwise.min(axis=1)))
    assert np.sort(to_prediction) == pytest.approx(np.sort(pairwise.min(axis=0)))


def test_cropping_does_not_change_distances_in_a_large_volume():
    small_reference, small_prediction = _volume((6, 6, 6)), _volume((6, 6, 6))
    small_reference[1:4, 1:5, 2:4] = True
    small_prediction[2:5, 0:3, 1:5] = True
    large_reference, large_prediction = _volume((40, 30, 30)), _volume((40, 30, 30))
    large_reference[10:16, 10:16, 10:16] = small_reference
    large_prediction[10:16, 10:16, 10:16] = small_prediction
    spacing = (2.5, 0.8, 0.8)
    # the small volume's masks touch its border (surface there); in the large one the same voxels do not touch it
    interior = compute_metrics(np.pad(small_reference, 1), np.pad(small_prediction, 1), spacing)
    large = compute_metrics(large_reference, large_prediction, spacing)
    for metric in ("dice", "iou", "hd95_mm", "assd_mm", "tp", "fp", "fn"):
        assert large[metric] == pytest.approx(interior[metric])
    assert large["assd_mm"] > 0


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        dice(_volume((2, 2, 2)), _volume((2, 2, 3)))
    mask = _volume()
    mask[1, 1, 1] = True
    with pytest.raises(ValueError, match="spacing"):
        hd95(mask, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(mask, mask, (1.0, 0.0, 1.0))
