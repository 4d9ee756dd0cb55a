"""preprocess_case and invert_to_original: order of steps, value ranges, labels, and exact inversion."""

from __future__ import annotations

import numpy as np
import pytest
from raw_builders import fingerprint_stub, make_mr_dataset, stub_dataset_json

from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError
from samdg.imageio import read_case, read_label
from samdg.imageio.geometry import Geometry
from samdg.planning.planner import plan_experiment
from samdg.planning.plans import ChannelNormalization, apply_overrides
from samdg.preprocessing.normalization import normalize_channel
from samdg.preprocessing.pipeline import invert_to_original, preprocess_case
from samdg.preprocessing.resampling import resample_labels


def _geometry(shape_zyx, spacing_zyx) -> Geometry:
    return Geometry(spacing=tuple(spacing_zyx), original_shape=tuple(shape_zyx[::-1]),
                    original_affine=np.eye(4).tolist(), ornt=[[0, 1], [1, 1], [2, 1]], io_backend="nibabel",
                    file_ending=".nii.gz")


def _plans(spacing_zyx, shape_zyx, target_inplane=None, modalities=("CT",), **overrides):
    plans = plan_experiment(fingerprint_stub([spacing_zyx], [shape_zyx], modalities), stub_dataset_json(modalities),
                            gpu_memory_gb=24)
    if target_inplane is not None:
        overrides["target_spacing"] = [plans.target_spacing[0], target_inplane, target_inplane]
    return apply_overrides(plans, overrides) if overrides else plans


def _blob_case(shape=(6, 30, 40), border=0):
    """(1,Z,Y,X) CT-like image and (Z,Y,X) labels {0, 3, 7}; an optional zero border for cropping."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.int16)
    label[((y - 12) ** 2 + (x - 15) ** 2) < 40] = 3
    label[((y - 18) ** 2 + (x - 28) ** 2) < 25] = 7
    image = np.where(label > 0, 100.0, -1000.0) + rng.normal(0, 5, shape)
    if border:
        image[:, :border] = 0
        image[:, :, -border:] = 0
        label[:, :border] = 0
        label[:, :, -border:] = 0
    return image[None].astype(np.float32), label


def test_without_resampling_the_inverse_is_exact():
    image, label = _blob_case(border=3)
    geometry = _geometry(label.shape, (3.0, 0.8, 0.8))
    plans = _plans((3.0, 0.8, 0.8), label.shape)
    data, seg, properties = preprocess_case(image, geometry, plans, label)
    assert data.dtype == np.float32 and seg.dtype == np.int16
    assert data.shape == (1, 6, 27, 37) and seg.shape == (1, 6, 27, 37)  # zero border cropped
    assert properties["bbox_used_for_cropping"] == [[0, 6], [3, 30], [0, 37]]
    assert properties["shape_before_cropping"] == [6, 30, 40]
    assert data.min() >= 0 and data.max() <= 1
    assert np.array_equal(invert_to_original(seg[0], properties, plans), label)
    one_hot = np.stack([seg[0] == v for v in (3, 7)]).astype(np.float32)
    restored = invert_to_original(one_hot, properties, plans)
    assert restored.shape == (2, *label.shape)
    assert np.array_equal(restored, np.stack([label == 3, label == 7]).astype(np.float32))


def test_in_plane_resampling_keeps_slices_and_labels():
    image, label = _blob_case()
    plans = _plans((3.0, 0.8, 0.8), label.shape, target_inplane=1.6)
    data, seg, properties = preprocess_case(image, _geometry(label.shape, (3.0, 0.8, 0.8)), plans, label)
    assert data.shape == (1, 6, 15, 20), "slices are never resampled, in-plane halves"
    assert set(np.unique(seg)) <= {0, 3, 7}, "no invented labels"
    assert properties["spacing_after_resampling"] == pytest.approx([3.0, 1.6, 1.6])
    assert properties["slices_with_label"] == {"3": list(range(6)), "7": list(range(6))}
    restored = invert_to_original(seg[0], properties, plans)
    assert restored.shape == label.shape
    for v in (3, 7):
        a, b = label == v, restored == v
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85


def test_slice_axis_transposition_round_trip():
    image, label = _blob_case(shape=(20, 24, 5))  # axis 2 is coarse -> sagittal slices
    spacing = (1.0, 1.0, 4.0)
    plans = _plans(spacing, label.shape)
    assert plans.transpose_forward == [2, 0, 1]
    data, seg, properties = preprocess_case(image, _geometry(label.shape, spacing), plans, label)
    assert data.shape == (1, 5, 20, 24)
    assert np.array_equal(seg[0], label.transpose(2, 0, 1))
    assert np.array_equal(invert_to_original(seg[0], properties, plans), label)
    probabilities = invert_to_original(data, properties, plans)
    assert probabilities.shape == (1, 20, 24, 5)


def test_normalisation_schemes():
    rng = np.random.default_rng(1)
    channel = rng.normal(200, 50, (4, 10, 10)).astype(np.float32)
    channel[0] = 0  # background
    ct, window = normalize_channel(channel, ChannelNormalization("ct_clip_scale", clip_low=100.0, clip_high=300.0))
    assert window == {"low": 100.0, "high": 300.0}
    assert np.allclose(ct, np.clip((channel - 100) / 200, 0, 1), atol=1e-6)
    mr, window = normalize_channel(channel, ChannelNormalization("percentile_clip_scale", percentiles=[0.5, 99.5]))
    low, high = np.percentile(channel[channel != 0], [0.5, 99.5])
    assert window["low"] == pytest.approx(low) and window["high"] == pytest.approx(high)
    assert mr.min() == 0 and mr.max() == pytest.approx(1) and np.all(mr[0] == 0)
    rgb, _ = normalize_channel(np.full((1, 2, 2), 51, np.float32),
                               ChannelNormalization("rgb_scale", clip_low=0.0, clip_high=255.0))
    assert np.allclose(rgb, 0.2)
    mm, _ = normalize_channel(np.array([[[2.0, 4.0, 6.0]]], np.float32), ChannelNormalization("minmax"))
    assert np.allclose(mm, [0, 0.5, 1])
    flat, _ = normalize_channel(np.full((2, 3, 3), 7, np.float32),
                                ChannelNormalization("percentile_clip_scale", percentiles=[0.5, 99.5]))
    assert np.all(flat == 0)


def test_label_resampling_never_invents_classes():
    rng = np.random.default_rng(2)
    seg = rng.choice(np.array([0, 2, 9], np.int16), size=(3, 17, 23))
    for new_hw in ((40, 50), (9, 11), (17, 40)):
        out = resample_labels(seg, new_hw)
        assert out.shape == (3, *new_hw) and out.dtype == np.int16
        assert set(np.unique(out)) <= {0, 2, 9}
    # doubling: each output pixel's nearest source pixel carries 0.75 x 0.75 > 1/2 of the weight, so it wins
    big = resample_labels(seg, (34, 46))
    assert np.array_equal(big, seg.repeat(2, axis=1).repeat(2, axis=2))


def test_real_files_with_different_orientations_preprocess_identically(samdg_roots):
    """The same anatomy stored RAS and LPS gives the same preprocessed arrays (orientation is handled)."""
    folder = make_mr_dataset(samdg_roots["raw"], num_cases=2, orientations=("RAS", "LPS"))
    raw = load_raw_dataset(folder)
    plans = _plans((3.6, 0.6, 0.6), (10, 32, 36), modalities=("MR", "MR"))
    plans.normalization = [ChannelNormalization("minmax")] * 2  # case 1 has twice the gain of case 0
    outputs = []
    for case_id in ("mr0", "mr1"):
        case = raw.training_cases[case_id]
        image, geometry = read_case(case.image_paths)
        label, _ = read_label(case.label_path)
        outputs.append(preprocess_case(image, geometry, plans, label))
    assert np.array_equal(outputs[0][1], outputs[1][1]), "labels identical despite RAS vs LPS files"
    assert outputs[0][2]["bbox_used_for_cropping"] == outputs[1][2]["bbox_used_for_cropping"]


def test_bad_inputs_are_user_errors():
    image, label = _blob_case()
    plans = _plans((3.0, 0.8, 0.8), label.shape)
    geometry = _geometry(label.shape, (3.0, 0.8, 0.8))
    with pytest.raises(SamdgError, match="2 channels, the plans .* expect 1"):
        preprocess_case(np.concatenate([image, image]), geometry, plans)
    with pytest.raises(SamdgError, match="label shape"):
        preprocess_case(image, geometry, plans, label[:-1])
    _, seg, properties = preprocess_case(image, geometry, plans, label)
    with pytest.raises(SamdgError, match="expected a \\(S,H,W\\) label map"):
        invert_to_original(seg[0, :-1], properties, plans)
