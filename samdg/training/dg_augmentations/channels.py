"""Channel-wise transforms computed once when the channels are copies of one another (replicated grey input)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def apply_channelwise(transform: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """``transform`` (C,H,W) -> (C,H,W), treating each channel alike, applied to ``image``.

    When every channel equals the first (samdg's ``replicate`` channel mapping) the transform runs on the first
    channel only and the result is copied to the others: the same output at a third of the cost.
    """
    if image.shape[0] > 1 and all(np.array_equal(image[0], channel) for channel in image[1:]):
        return np.repeat(transform(image[:1]), image.shape[0], axis=0)
    return transform(image)
