"""In-plane resampling of stacks of slices (the slice axis is never resampled in a 2D plan).

Images use bicubic interpolation (anti-aliased when shrinking) through ``torch.nn.functional.interpolate``, which
is several times faster on the CPU than scikit-image's order-3 spline. Label maps are resampled as if one-hot:
every label's binary mask is interpolated linearly and each pixel takes the label with the largest weight, so no
value appears that was not among its source pixels (no classes are invented at boundaries).
Work proceeds in chunks of slices so memory stays bounded by a few slices, not the volume.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 24  # floats per chunk (64 MiB)


def new_inplane_shape(shape_hw: tuple[int, int], spacing_hw: tuple[float, float],
                      target_hw: tuple[float, float]) -> tuple[int, int]:
    """Number of pixels after resampling from ``spacing_hw`` to ``target_hw`` (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_hw, spacing_hw, target_hw))


def _chunk(num_slices: int, per_slice: int) -> int:
    return max(1, min(num_slices, _CHUNK_ELEMENTS // max(1, per_slice)))


def resample_image(data: np.ndarray, new_hw: tuple[int, int], mode: str = "bicubic") -> np.ndarray:
    """(C,S,H,W) float -> (C,S,h,w) float32; ``mode`` 'bicubic' (images) or 'bilinear' (probabilities, logits)."""
    channels, slices, height, width = data.shape
    new_hw = tuple(int(v) for v in new_hw)
    if (height, width) == new_hw:
        return np.ascontiguousarray(data, dtype=np.float32)
    shrinking = new_hw[0] < height or new_hw[1] < width
    out = np.empty((channels, slices, *new_hw), dtype=np.float32)
    step = _chunk(slices, channels * max(height * width, new_hw[0] * new_hw[1]))
    for start in range(0, slices, step):
        stop = min(slices, start + step)
        block = torch.from_numpy(np.ascontiguousarray(data[:, start:stop], dtype=np.float32))
        block = block.reshape(channels * (stop - start), 1, height, width)
        resized = F.interpolate(block, size=new_hw, mode=mode, align_corners=False, antialias=shrinking)
        out[:, start:stop] = resized.reshape(channels, stop - start, *new_hw).numpy()
    return out


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of linear interpolation (torch's align_corners=False convention)."""
    source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    weight_high = (source - low).astype(np.float32)
    return low, high, 1 - weight_high, weight_high


def resample_labels(seg: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
    """(S,H,W) integer label map -> (S,h,w), same dtype.

    Equivalent to interpolating every label's binary mask bilinearly and taking the label of largest weight, but
    computed from the four source pixels of each output pixel, so the cost does not grow with the number of labels.
    """
    slices, height, width = seg.shape
    new_hw = tuple(int(v) for v in new_hw)
    if (height, width) == new_hw:
        return seg.copy()
    rows = _linear_taps(height, new_hw[0])
    cols = _linear_taps(width, new_hw[1])
    weights = [rows[2 + a][:, None] * cols[2 + b][None, :] for a in (0, 1) for b in (0, 1)]  # 4 x (h,w)
    out = np.empty((slices, *new_hw), dtype=seg.dtype)
    step = _chunk(slices, 8 * new_hw[0] * new_hw[1])
    for start in range(0, slices, step):
        block = seg[start:start + step]
        row_taps = (block[:, rows[0]], block[:, rows[1]])
        taps = [row_taps[a][:, :, cols[b]] for a in (0, 1) for b in (0, 1)]  # 4 x (n,h,w) labels
        result = taps[0].copy()
        # only pixels whose four source pixels disagree (boundaries) need a vote
        mixed = np.flatnonzero((taps[0] != taps[1]) | (taps[0] != taps[2]) | (taps[0] != taps[3]))
        if mixed.size:
            pixel = mixed % (new_hw[0] * new_hw[1])
            labels = [tap.ravel()[mixed] for tap in taps]
            tap_weights = [w.ravel()[pixel] for w in weights]
            best_label, best_score = labels[0], None
            for candidate in labels:
                score = sum(w * (label == candidate) for w, label in zip(tap_weights, labels))
                if best_score is None:
                    best_score = score
                else:
                    better = score > best_score
                    best_label = np.where(better, candidate, best_label)
                    best_score = np.where(better, score, best_score)
            result.ravel()[mixed] = best_label
        out[start:start + step] = result
    return out
