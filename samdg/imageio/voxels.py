"""Checks on voxel values that every reader applies before converting them to float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdg.errors import SamdgError


def require_real(path: Path, data: np.ndarray) -> np.ndarray:
    """Refuse complex-valued voxels (e.g. raw MR k-space or phase data): casting them to float32 would silently
    keep only the real part. Returns ``data`` unchanged."""
    if np.iscomplexobj(data):
        raise SamdgError(f"{path}: holds complex-valued voxels ({data.dtype}); store the magnitude (or the real "
                         "part, if that is what you mean) as a real-valued image")
    return data
