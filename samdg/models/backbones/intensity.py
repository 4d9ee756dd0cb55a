"""Intensity conventions: how a backbone turns images in [0,1] into what its weights were trained on.

- ``sam_meanstd_255``: SAM, ``(255 x - mean) / std`` with SAM's RGB pixel mean/std.
- ``unit_range``: unchanged [0,1] (LiteMedSAM, MedSAM).
- ``per_image_zscore``: each image and channel to zero mean, unit std (DAPSAM's pipeline).

Note: samdg pads images in [0,1] space before the encoder (``fit_to_input``), whereas segment-anything pads
after normalising; under ``sam_meanstd_255`` the padded border is therefore ``-mean/std`` instead of 0.
"""

from __future__ import annotations

from typing import Callable

import torch

from samdg.errors import SamdgError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _sam_meanstd_255(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    return (images * 255.0 - mean) / std


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    return images


def _per_image_zscore(images: torch.Tensor) -> torch.Tensor:
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = images.std(dim=(2, 3), keepdim=True)
    return (images - mean) / std.clamp_min(1e-6)


INTENSITY_CONVENTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sam_meanstd_255": _sam_meanstd_255,
    "unit_range": _unit_range,
    "per_image_zscore": _per_image_zscore,
}


def apply_intensity(images: torch.Tensor, convention: str) -> torch.Tensor:
    """(B,3,S,S) in [0,1] -> (B,3,S,S) in the convention's range."""
    if convention not in INTENSITY_CONVENTIONS:
        raise SamdgError(
            f"unknown intensity convention '{convention}'; known: {', '.join(sorted(INTENSITY_CONVENTIONS))}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B,3,S,S), got {tuple(images.shape)}")
    return INTENSITY_CONVENTIONS[convention](images)
