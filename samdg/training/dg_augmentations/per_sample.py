"""The batchgenerators adapter: one of several DG transforms, per sample, with a probability."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform


class DGTransform(Protocol):
    """``(image (C,H,W) float32 in [0,1], label (H,W) int, rng) -> (image, label)``, a pure function of its inputs."""

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...


class RandomDGTransform(AbstractTransform):
    """batchgenerators transform: with ``p_per_sample``, one of ``choices`` (uniformly) changes a sample's image.

    ``data`` is (B,C,H,W) float, ``seg`` (B,1,H,W) float label values (left unchanged). The draws come from
    numpy's global generator, which the caller seeds per sample (like every batchgenerators transform); the chosen
    transform gets its own ``np.random.Generator`` seeded from it. Images are clipped to [0,1] first because the
    spatial transform's cubic interpolation overshoots slightly.
    """

    def __init__(self, choices: Sequence[DGTransform], p_per_sample: float) -> None:
        self.choices = tuple(choices)
        self.p_per_sample = p_per_sample

    def __call__(self, **data_dict):
        data, seg = data_dict["data"], data_dict["seg"]
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
                transform = self.choices[rng.integers(len(self.choices))]
                label = np.rint(seg[b, 0]).astype(np.int64)
                data[b], _ = transform(np.clip(data[b], 0.0, 1.0).astype(np.float32), label, rng)
        return data_dict
