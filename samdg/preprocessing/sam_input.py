"""Preprocessed slices -> SAM inputs and SAM outputs -> slices. Shared by the training data loader and the predictor.

1. :func:`slice_to_sam_channels` picks SAM's three input channels from a preprocessed (C,S,H,W) case following the
   plan's ``channel_mapping`` (one channel replicated, neighbouring slices for 2.5D context, several modalities,
   or RGB).
2. :func:`fit_to_input` resizes the longest side to the variant's input size (keeping the aspect ratio, as SAM's
   ``ResizeLongestSide``) and zero-pads bottom/right to a square; :func:`fit_label_to_input` does the same for label
   maps with nearest-neighbour sampling.
3. :func:`restore_from_input` crops the unpadded part of the model's logits (at any resolution, e.g. SAM's
   low-res 256x256 masks for a 1024 input) and resizes them bilinearly back to the slice.

Intensities stay in [0,1]; the backbone applies its own intensity convention. Functions accept numpy arrays or
torch tensors and return the same kind.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _mapping_parts(mapping: Any) -> tuple[list[int], list[int]]:
    if isinstance(mapping, dict):
        return list(mapping["channels"]), list(mapping.get("slice_offsets", [0, 0, 0]))
    return list(mapping.channels), list(mapping.slice_offsets)


def slice_to_sam_channels(data, s: int, mapping):
    """(C,S,H,W) preprocessed case, slice index ``s`` -> (3,H,W).

    SAM channel i is data channel ``mapping.channels[i]`` at slice ``s + mapping.slice_offsets[i]``; slice indices
    are clamped at the volume ends (so the first slice of a 2.5D stack repeats itself as its lower neighbour).
    """
    channels, offsets = _mapping_parts(mapping)
    last = data.shape[1] - 1
    if not 0 <= s <= last:
        raise IndexError(f"slice {s} is outside a volume of {last + 1} slices")
    planes = [data[c, min(max(s + o, 0), last)] for c, o in zip(channels, offsets)]
    return torch.stack(planes) if isinstance(data, torch.Tensor) else np.stack(planes)


def volume_to_sam_channels(data, mapping, slices: Sequence[int] | None = None):
    """(C,S,H,W) -> (N,3,H,W) for ``slices`` (default: every slice), vectorised version of the above."""
    channels, offsets = _mapping_parts(mapping)
    last = data.shape[1] - 1
    index = np.arange(last + 1) if slices is None else np.asarray(slices)
    planes = [data[c][np.clip(index + o, 0, last)] for c, o in zip(channels, offsets)]  # each (N,H,W)
    return torch.stack(planes, dim=1) if isinstance(data, torch.Tensor) else np.stack(planes, axis=1)


def scaled_size(hw: Sequence[int], size: int) -> tuple[int, int]:
    """(H,W) -> (h,w) with the longest side equal to ``size``, aspect ratio kept."""
    height, width = int(hw[0]), int(hw[1])
    scale = size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _to_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.ascontiguousarray(x)), True


def _fit(x: torch.Tensor, size: int, mode: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N,C,H,W) -> (N,C,size,size) and the scaled (h,w)."""
    height, width = x.shape[-2:]
    new_hw = scaled_size((height, width), size)
    if new_hw != (height, width):
        if mode == "nearest":
            x = F.interpolate(x, size=new_hw, mode="nearest-exact")
        else:
            shrinking = new_hw[0] < height or new_hw[1] < width
            x = F.interpolate(x, size=new_hw, mode=mode, align_corners=False, antialias=shrinking)
    x = F.pad(x, (0, size - new_hw[1], 0, size - new_hw[0]))
    return x, new_hw


def fit_to_input(image, size: int):
    """(3,H,W) or (B,3,H,W) in [0,1] -> ((…,3,size,size), (h,w)): longest side resized to ``size`` (bilinear,
    anti-aliased when shrinking), then zero-padded at the bottom and right; (h,w) is the unpadded extent."""
    tensor, was_numpy = _to_tensor(image)
    single = tensor.ndim == 3
    x = tensor[None] if single else tensor
    dtype = x.dtype if x.is_floating_point() else torch.float32
    out, hw = _fit(x.to(dtype), size, "bilinear")
    out = out.clamp_(0.0, 1.0)
    out = out[0] if single else out
    return (out.numpy() if was_numpy else out), hw


def fit_label_to_input(label, size: int):
    """(H,W) or (B,H,W) integer label map -> ((…,size,size) same dtype, (h,w)); nearest neighbour, padded with 0."""
    tensor, was_numpy = _to_tensor(label)
    single = tensor.ndim == 2
    x = (tensor[None] if single else tensor)[:, None]
    out, hw = _fit(x.to(torch.float32), size, "nearest")
    out = out[:, 0].round().to(tensor.dtype)
    out = out[0] if single else out
    return (out.numpy() if was_numpy else out), hw


def restore_from_input(logits, scaled_or_original_hw: Sequence[int], original_hw: Sequence[int] | None = None):
    """(B,K,L,L) logits on the padded input grid -> (B,K,H,W) on the slice grid (bilinear).

    Call as ``restore_from_input(logits, (H,W))`` or ``restore_from_input(logits, scaled_hw, (H,W))`` with the
    ``(h,w)`` that :func:`fit_to_input` returned. ``L`` may differ from the input size (low-res mask logits): the
    valid region is the same fraction of the grid.
    """
    reference = scaled_or_original_hw
    target = tuple(int(v) for v in (original_hw if original_hw is not None else scaled_or_original_hw))
    tensor, was_numpy = _to_tensor(logits)
    grid_h, grid_w = tensor.shape[-2:]
    longest = max(int(reference[0]), int(reference[1]))
    valid_h = max(1, int(round(grid_h * int(reference[0]) / longest)))
    valid_w = max(1, int(round(grid_w * int(reference[1]) / longest)))
    cropped = tensor[..., :valid_h, :valid_w]
    dtype = cropped.dtype if cropped.is_floating_point() else torch.float32
    out = F.interpolate(cropped.to(dtype), size=target, mode="bilinear", align_corners=False)
    return out.numpy() if was_numpy else out
