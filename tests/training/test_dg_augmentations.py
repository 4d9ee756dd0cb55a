"""Domain-generalisation augmentations (GIN/IPA, SLAug location-scale, Fourier amplitude mixing) and their presets."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from samdg.errors import SamdgError
from samdg.planning.plans import Augmentation
from samdg.training.augmentation import PRESETS, build_augmentation, seeded_global_rng
from samdg.training.config import resolve_run
from samdg.training.dg_augmentations import (
    FourierAmplitudeMix,
    LocationScale,
    RandomConvolution,
    RandomDGTransform,
)
from samdg.training.dg_augmentations.channels import apply_channelwise
from samdg.training.dg_augmentations.fourier import amplitude_mix
from samdg.training.dg_augmentations.location_scale import random_bezier_curve
from samdg.training.dg_augmentations.random_conv import conv2d_reflect, smooth_random_mask
from samdg.training.loader import SliceBatches, make_loader
from samdg.training.sampler import SliceSampler

DG_PRESETS = ("dg_gin", "dg_slaug", "dg_fourier", "dg_all")
TRANSFORMS = {
    "gin": RandomConvolution(),
    "ipa": RandomConvolution(ipa_probability=1.0),
    "gin_mixing_channels": RandomConvolution(mix_channels=True),
    "gla": LocationScale(local_probability=0.0),
    "lla": LocationScale(local_probability=1.0),
    "fourier": FourierAmplitudeMix(),
}


def phantom(size: int = 48, replicate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A smooth background with two bright/dark organs: image (3,S,S) float32 in [0.1,0.9], label (S,S) in {0,1,2}."""
    rows, cols = np.mgrid[:size, :size] / size
    grey = 0.3 + 0.2 * rows
    label = np.zeros((size, size), np.int16)
    label[(rows - 0.35) ** 2 + (cols - 0.3) ** 2 < 0.04] = 1
    label[(rows - 0.65) ** 2 + (cols - 0.7) ** 2 < 0.03] = 2
    grey = np.where(label == 1, 0.9, np.where(label == 2, 0.1, grey))
    image = np.stack([grey, grey, grey] if replicate else [grey, grey ** 2, 1 - grey]).astype(np.float32)
    return image, label


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_contract_shapes_range_labels_and_determinism(name):
    transform = TRANSFORMS[name]
    image, label = phantom()
    image_before, label_before = image.copy(), label.copy()
    outputs = [transform(image, label, np.random.default_rng(seed)) for seed in (5, 5, 6, 7)]
    for out_image, out_label in outputs:
        assert out_image.shape == image.shape and out_image.dtype == np.float32
        assert 0.0 <= out_image.min() and out_image.max() <= 1.0
        assert out_label is label  # intensity only: the label is handed back untouched
        assert not np.allclose(out_image, image, atol=1e-3)  # it does change the image
    assert np.array_equal(image, image_before) and np.array_equal(label, label_before)  # inputs not modified
    assert np.array_equal(outputs[0][0], outputs[1][0])  # same seed, same output
    assert not np.allclose(outputs[0][0], outputs[2][0]) and not np.allclose(outputs[2][0], outputs[3][0])
    if name != "gin_mixing_channels":  # replicated grey stays grey, as at test time
        assert all(np.array_equal(outputs[2][0][0], channel) for channel in outputs[2][0][1:])
    else:
        assert not np.array_equal(outputs[2][0][0], outputs[2][0][1])


@pytest.mark.parametrize("name", TRANSFORMS)
def test_blank_slice_gives_a_finite_flat_image(name):
    """Padding-only or empty slices (a constant image) must not produce NaN from the standardisation or the FFT."""
    blank, label = np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), np.int16)
    for seed in range(4):
        out, _ = TRANSFORMS[name](blank, label, np.random.default_rng(seed))
        assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0 and np.ptp(out) < 1e-5


@pytest.mark.parametrize("name", ["gin", "gla", "lla", "fourier"])
def test_distinct_channels_get_the_same_channel_wise_mapping(name):
    """Shared-weight transforms map each channel alike: channel c of a 3-channel image = the 1-channel result."""
    image, label = phantom(replicate=False)
    out, _ = TRANSFORMS[name](image, label, np.random.default_rng(3))
    for channel in range(3):
        single, _ = TRANSFORMS[name](image[channel:channel + 1], label, np.random.default_rng(3))
        np.testing.assert_allclose(out[channel], single[0], atol=1e-5)


def test_gin_keeps_the_input_intensity_range():
    image, label = phantom()
    image = 0.2 + 0.5 * image  # [0.25, 0.65]
    for seed in range(5):
        out, _ = RandomConvolution()(image, label, np.random.default_rng(seed))
        assert image.min() - 1e-5 <= out.min() and out.max() <= image.max() + 1e-5


def test_ipa_blends_two_gin_views_with_a_smooth_mask():
    image, label = phantom()
    gin, _ = RandomConvolution(ipa_probability=0.0)(image, label, np.random.default_rng(1))
    ipa, _ = RandomConvolution(ipa_probability=1.0)(image, label, np.random.default_rng(1))
    assert not np.allclose(gin, ipa)  # same first view, blended with a second one
    mask = smooth_random_mask((64, 80), 4, np.random.default_rng(0))
    assert mask.shape == (64, 80) and mask.min() == 0.0 and mask.max() == 1.0
    assert np.abs(np.diff(mask, axis=0)).max() < 0.1 and np.abs(np.diff(mask, axis=1)).max() < 0.1  # smooth


def test_conv2d_reflect_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.random((2, 9, 11), dtype=np.float32)
    for size in (1, 3):
        weight, bias = rng.standard_normal((3, 2, size, size)), rng.standard_normal(3)
        padded = torch.nn.functional.pad(torch.from_numpy(x)[None], (size // 2,) * 4, mode="reflect")
        expected = torch.nn.functional.conv2d(padded, torch.tensor(weight, dtype=torch.float32),
                                              torch.tensor(bias, dtype=torch.float32))[0].numpy()
        np.testing.assert_allclose(conv2d_reflect(x, weight, bias), expected, atol=1e-5)


def test_bezier_curves_by_kind():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        xs, ys = random_bezier_curve(rng, "increasing")
        assert np.all(np.diff(xs) >= -1e-12) and np.all(np.diff(ys) >= -1e-12)
        assert (xs[0], ys[0], xs[-1], ys[-1]) == (0.0, 0.0, 1.0, 1.0)
        _, ys = random_bezier_curve(rng, "decreasing")
        assert np.all(np.diff(ys) <= 1e-12) and (ys[0], ys[-1]) == (1.0, 0.0)
        _, ys = random_bezier_curve(rng, "non_monotonic")
        assert 0.0 <= ys.min() and ys.max() <= 1.0
    with pytest.raises(ValueError, match="not one of"):
        random_bezier_curve(np.random.default_rng(0), "wiggly")


def test_lla_gives_each_class_region_its_own_curve_and_gla_one_curve():
    size = 64
    image = np.full((3, size, size), 0.5, np.float32)  # one intensity everywhere: only the label can separate regions
    label = np.zeros((size, size), np.int16)
    label[:, size // 2:] = 1
    gla, _ = LocationScale(local_probability=0.0)(image, label, np.random.default_rng(0))
    assert np.ptp(gla) < 1e-6
    lla, _ = LocationScale(local_probability=1.0)(image, label, np.random.default_rng(0))
    left, right = lla[0, :, : size // 2 - 8], lla[0, :, size // 2 + 8:]  # away from the blended border
    assert np.ptp(left) < 1e-6 and np.ptp(right) < 1e-6 and abs(left[0, 0] - right[0, 0]) > 1e-3
    border = lla[0, 0, size // 2 - 3: size // 2 + 3]
    assert np.all(np.abs(np.diff(border)) < abs(left[0, 0] - right[0, 0]))  # a gradual transition, not a step


def test_amplitude_mix_keeps_phase_and_takes_the_reference_low_frequencies():
    rng = np.random.default_rng(0)
    image, reference = rng.random((2, 1, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(amplitude_mix(image, reference, 3, 0.0), image, atol=1e-5)
    swapped = amplitude_mix(image, reference, 32, 1.0)  # the window covers every frequency
    np.testing.assert_allclose(np.abs(np.fft.fft2(swapped)), np.abs(np.fft.fft2(reference)), atol=1e-3)
    np.testing.assert_allclose(np.angle(np.fft.fft2(swapped))[0, 1:4, 1:4], np.angle(np.fft.fft2(image))[0, 1:4, 1:4],
                               atol=1e-3)
    low = amplitude_mix(image, reference, 2, 1.0)
    spectrum, original = np.abs(np.fft.fft2(low)), np.abs(np.fft.fft2(image))
    np.testing.assert_allclose(spectrum[0, 10:22, 10:22], original[0, 10:22, 10:22], atol=1e-3)  # high: untouched
    np.testing.assert_allclose(spectrum[0, :3, :3], np.abs(np.fft.fft2(reference))[0, :3, :3], atol=1e-3)


def test_apply_channelwise_computes_replicated_channels_once():
    shapes = []

    def negate(x):
        shapes.append(x.shape)
        return -x

    grey = np.ones((3, 4, 4), np.float32)
    assert np.array_equal(apply_channelwise(negate, grey), -grey) and shapes == [(1, 4, 4)]
    colour = np.stack([grey[0], 2 * grey[0], grey[0]])
    assert np.array_equal(apply_channelwise(negate, colour), -colour) and shapes[-1] == (3, 4, 4)


def test_random_dg_transform_applies_per_sample_with_its_probability():
    image, label = phantom()
    data = np.stack([image, image])
    seg = np.stack([label, label])[:, None].astype(np.float32)

    def run(p, seed):
        batch = {"data": data.copy(), "seg": seg.copy()}
        np.random.seed(seed)
        return RandomDGTransform([LocationScale(), RandomConvolution()], p)(**batch)

    assert np.array_equal(run(0.0, 1)["data"], data)
    out = run(1.0, 1)
    assert np.array_equal(out["seg"], seg)
    assert not np.allclose(out["data"][0], data[0]) and not np.allclose(out["data"][0], out["data"][1])
    assert np.array_equal(run(1.0, 1)["data"], out["data"]) and not np.array_equal(run(1.0, 2)["data"], out["data"])


def test_presets_are_the_plans_choices_and_unknown_names_are_refused():
    assert set(typing.get_args(Augmentation)) == set(PRESETS)
    assert set(DG_PRESETS) <= set(PRESETS)
    with pytest.raises(SamdgError, match="unknown; choose one of .*dg_gin, dg_slaug, dg_fourier, dg_all"):
        build_augmentation("dg_everything", 32)


@pytest.mark.parametrize("preset", DG_PRESETS)
def test_dg_presets_through_build_augmentation(preset):
    augment = build_augmentation(preset, 48)
    image, label = phantom()
    outputs = []
    for seed in (11, 11, 12, 13, 14):
        with seeded_global_rng(seed):
            outputs.append(augment(image, label))
    assert np.array_equal(outputs[0][0], outputs[1][0]) and np.array_equal(outputs[0][1], outputs[1][1])
    assert all(not np.array_equal(outputs[0][0], other[0]) for other in outputs[2:])
    for out_image, out_label in outputs:
        assert out_image.shape == (3, 48, 48) and out_image.dtype == np.float32
        assert 0.0 <= out_image.min() and out_image.max() <= 1.0
        assert out_label.shape == label.shape and out_label.dtype == label.dtype
        assert set(np.unique(out_label)) <= {0, 1, 2}
    state = np.random.get_state()[1].copy()
    with seeded_global_rng(1):
        augment(image, label)
    assert np.array_equal(np.random.get_state()[1], state)


def fingerprint(image: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Position-weighted means of an augmented sample: they change with any flip, rotation or intensity change."""
    ramp = np.arange(image.shape[-1]) + 3 * np.arange(image.shape[-2])[:, None]
    return float((image * ramp).mean()), float((label * ramp).mean())


# Fingerprints of the existing presets for the phantom and seeds 0-3: adding presets must not change them.
PINNED = {
    "default": [(40.110002, 32.00434), (39.537274, 28.302517), (27.773884, 20.726128), (39.98768, 32.00434)],
    "dg_strong": [(41.566309, 26.827257), (41.823791, 30.52908), (33.692534, 18.717448), (41.376732, 30.52908)],
}


@pytest.mark.parametrize("preset", sorted(PINNED))
def test_existing_presets_are_unchanged(preset):
    augment = build_augmentation(preset, 48)
    image, label = phantom()
    values = []
    for seed in range(4):
        with seeded_global_rng(seed):
            values.append(fingerprint(*augment(image, label)))
    np.testing.assert_allclose(values, PINNED[preset], rtol=1e-5)


@pytest.fixture
def dg_run(synthetic_dataset, quick_args):
    return resolve_run(quick_args(fold="all", overrides={"training.augmentation": "dg_all"}), "cpu")


def test_dg_preset_from_the_plan_through_the_loader(dg_run):
    assert dg_run.augmentation == "dg_all"
    sampler = SliceSampler(dg_run.cases, dg_run.train_cases, 3, 0.33, seed=2)
    for preset in DG_PRESETS:
        batch = SliceBatches(dg_run.cases, sampler, dg_run.plans.channel_mapping, 64, preset)[(0, 1)]
        assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].dtype == torch.float32
        assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
        assert set(torch.unique(batch["target"]).tolist()) <= {0, 1, 2, 3}
        plain = SliceBatches(dg_run.cases, sampler, dg_run.plans.channel_mapping, 64, "default")[(0, 1)]
        assert not torch.equal(batch["image"], plain["image"])  # the DG transform acted on some sample
    batches = SliceBatches(dg_run.cases, sampler, dg_run.plans.channel_mapping, 64, dg_run.augmentation)
    serial, indices = make_loader(batches, 2, 0, False)
    parallel, parallel_indices = make_loader(batches, 2, 2, False)
    indices.set_epoch(3)
    parallel_indices.set_epoch(3)
    for a, b in zip(serial, parallel):  # a worker process makes the same augmented batch
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    del parallel
