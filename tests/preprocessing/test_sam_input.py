"""SAM input helpers shared by the data loader and the predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdg.planning.plans import ChannelMapping
from samdg.preprocessing.sam_input import (
    fit_label_to_input,
    fit_to_input,
    restore_from_input,
    scaled_size,
    slice_to_sam_channels,
    volume_to_sam_channels,
)


def _volume(channels=2, slices=4, h=5, w=7):
    # value encodes (channel, slice) so the picks are easy to check
    data = np.zeros((channels, slices, h, w), np.float32)
    for c in range(channels):
        for s in range(slices):
            data[c, s] = 10 * c + s
    return data


def test_replicate_modalities_and_rgb():
    data = _volume()
    out = slice_to_sam_channels(data, 2, ChannelMapping("replicate", [0, 0, 0]))
    assert out.shape == (3, 5, 7) and [out[i, 0, 0] for i in range(3)] == [2, 2, 2]
    out = slice_to_sam_channels(data, 1, ChannelMapping("modalities", [0, 1, 0]))
    assert [out[i, 0, 0] for i in range(3)] == [1, 11, 1]
    out = slice_to_sam_channels(data, 3, {"mode": "rgb", "channels": [1, 0, 1], "slice_offsets": [0, 0, 0]})
    assert [out[i, 0, 0] for i in range(3)] == [13, 3, 13]


def test_context_mode_clamps_at_the_volume_ends():
    data = _volume()
    mapping = ChannelMapping("context", [0, 0, 0], [-1, 0, 1])
    assert [slice_to_sam_channels(data, 0, mapping)[i, 0, 0] for i in range(3)] == [0, 0, 1]
    assert [slice_to_sam_channels(data, 2, mapping)[i, 0, 0] for i in range(3)] == [1, 2, 3]
    assert [slice_to_sam_channels(data, 3, mapping)[i, 0, 0] for i in range(3)] == [2, 3, 3]
    with pytest.raises(IndexError):
        slice_to_sam_channels(data, 4, mapping)


def test_volume_version_matches_the_slice_version_for_numpy_and_torch():
    data = _volume(slices=6)
    mapping = ChannelMapping("context", [1, 0, 1], [-1, 0, 2])
    stacked = volume_to_sam_channels(data, mapping)
    assert stacked.shape == (6, 3, 5, 7)
    for s in range(6):
        assert np.array_equal(stacked[s], slice_to_sam_channels(data, s, mapping))
    as_torch = volume_to_sam_channels(torch.from_numpy(data), mapping, slices=[1, 4])
    assert isinstance(as_torch, torch.Tensor) and torch.equal(as_torch, torch.from_numpy(stacked[[1, 4]]))
    assert torch.equal(slice_to_sam_channels(torch.from_numpy(data), 4, mapping), as_torch[1])


def test_fit_to_input_keeps_the_aspect_ratio_and_pads_bottom_right():
    image = np.random.default_rng(0).random((3, 50, 100)).astype(np.float32)
    fitted, hw = fit_to_input(image, 64)
    assert isinstance(fitted, np.ndarray) and fitted.shape == (3, 64, 64)
    assert hw == (32, 64) == scaled_size((50, 100), 64)
    assert np.all(fitted[:, 32:] == 0) and fitted[:, :32].std() > 0
    assert 0 <= fitted.min() and fitted.max() <= 1
    batch, hw = fit_to_input(torch.rand(2, 3, 30, 20), 60)
    assert batch.shape == (2, 3, 60, 60) and hw == (60, 40) and torch.all(batch[..., 40:] == 0)


def test_fit_label_to_input_uses_nearest_neighbour():
    label = np.zeros((20, 10), np.int64)
    label[5:15, 2:8] = 4
    label[0, 0] = 9
    fitted, hw = fit_label_to_input(label, 40)
    assert fitted.dtype == np.int64 and fitted.shape == (40, 40) and hw == (40, 20)
    assert set(np.unique(fitted)) == {0, 4, 9}
    assert np.array_equal(fitted[:, :20], label.repeat(2, 0).repeat(2, 1))
    batch, _ = fit_label_to_input(torch.from_numpy(label)[None].repeat(3, 1, 1), 40)
    assert batch.shape == (3, 40, 40) and torch.equal(batch[1], torch.from_numpy(fitted))


def test_restore_inverts_fit_on_full_and_low_resolution_logits():
    y, x = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 80), indexing="ij")
    smooth = np.sin(3 * x) + np.cos(2 * y)
    image = np.stack([smooth] * 3).astype(np.float32)[None] / 4 + 0.5  # within [0, 1]
    fitted, hw = fit_to_input(image, 64)
    restored = restore_from_input(fitted, hw, (48, 80))
    assert restored.shape == (1, 3, 48, 80)
    assert np.abs(restored - image).max() < 0.03
    assert np.allclose(restore_from_input(fitted, (48, 80)), restored), "both call forms agree"
    low_res = torch.nn.functional.interpolate(torch.from_numpy(fitted), size=(16, 16), mode="bilinear",
                                              align_corners=False, antialias=True)
    from_low = restore_from_input(low_res, hw, (48, 80))
    assert isinstance(from_low, torch.Tensor) and from_low.shape == (1, 3, 48, 80)
    assert (from_low.numpy() - image).__abs__().mean() < 0.05
