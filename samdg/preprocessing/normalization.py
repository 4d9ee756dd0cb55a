"""Map each channel's intensities to [0, 1], one scheme per modality (see ``ChannelNormalization``).

- ``ct_clip_scale``: clip to the dataset-wide foreground window [clip_low, clip_high] (Hounsfield units are
  calibrated, so one window serves every case), then scale.
- ``percentile_clip_scale``: clip to this case's own percentiles of its nonzero voxels, then scale (MR units differ
  per scanner and case, so a per-case window is robust to that shift; MedSAM does the same).
- ``rgb_scale``: divide by the format's maximum (255 for 8-bit).
- ``minmax``: this case's min..max.

A constant channel maps to 0. The window actually used is returned so that it can be stored with the case.
"""

from __future__ import annotations

import numpy as np

from samdg.planning.plans import ChannelNormalization


def _window(channel: np.ndarray, norm: ChannelNormalization) -> tuple[float, float]:
    if norm.scheme in ("ct_clip_scale", "rgb_scale"):
        return float(norm.clip_low), float(norm.clip_high)
    if norm.scheme == "minmax":
        return float(channel.min()), float(channel.max())
    nonzero = channel[channel != 0]
    if nonzero.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(nonzero, norm.percentiles)
    return float(low), float(high)


def normalize_channel(channel: np.ndarray, norm: ChannelNormalization) -> tuple[np.ndarray, dict[str, float]]:
    """(Z,Y,X) intensities -> (float32 in [0,1], {"low", "high"}: the window that was mapped to 0 and 1)."""
    low, high = _window(channel, norm)
    if not high > low:
        return np.zeros(channel.shape, dtype=np.float32), {"low": low, "high": high}
    out = np.clip(channel, low, high).astype(np.float32, copy=False)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out, {"low": low, "high": high}


def normalize(image: np.ndarray, schemes: list[ChannelNormalization]) -> tuple[np.ndarray, list[dict[str, float]]]:
    """(C,Z,Y,X) -> (float32 (C,Z,Y,X) in [0,1], per-channel windows)."""
    if image.shape[0] != len(schemes):
        from samdg.errors import SamdgError

        raise SamdgError(f"the image has {image.shape[0]} channels but the plans normalise {len(schemes)}")
    out = np.empty(image.shape, dtype=np.float32)
    windows = []
    for c, norm in enumerate(schemes):
        out[c], window = normalize_channel(image[c], norm)
        windows.append(window)
    return out, windows
