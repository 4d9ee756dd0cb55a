"""Fourier amplitude mixing: the low-frequency amplitude spectrum of another view, the phase of the sample.

Yang & Soatto, "FDA: Fourier domain adaptation for semantic segmentation", CVPR 2020 (swap the low-frequency
amplitude, keep the phase), and Xu et al., "A Fourier-based framework for domain generalization", CVPR 2021 (mix
the amplitudes with a random weight). The phase carries the structure; the low-frequency amplitude carries the
global "style" (contrast, brightness, shading) that differs between scanners.

Where the other amplitude comes from: samdg augments one sample at a time with the sample's own seed, so that a
sample is the same whichever worker or rank makes it and so that an augmented view can be computed (and cached)
for one slice before the encoder. A partner drawn from the batch or from a bank filled as training goes would make
a sample depend on its batch-mates or on the order of work. The reference is therefore the same sample under a
random Bezier intensity curve (:func:`~samdg.training.dg_augmentations.location_scale.random_bezier_curve`): a
synthetic "other scanner" with the same anatomy, which also works with a single source domain, where other slices
share the source's style. :func:`amplitude_mix` itself takes any reference image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from samdg.training.dg_augmentations.channels import apply_channelwise
from samdg.training.dg_augmentations.location_scale import CURVE_KINDS, apply_curve, random_bezier_curve


def low_frequency_mask(shape: tuple[int, int], radius: int) -> np.ndarray:
    """(H, W//2+1) bool: the frequencies of an ``rfft2`` spectrum within ``radius`` of zero along both axes."""
    rows = np.abs(np.fft.fftfreq(shape[0]) * shape[0]) <= radius
    cols = np.fft.rfftfreq(shape[1]) * shape[1] <= radius
    return rows[:, None] & cols[None, :]


def amplitude_mix(image: np.ndarray, reference: np.ndarray, radius: int, weight: float) -> np.ndarray:
    """Mix the reference's low-frequency amplitude into the image's, keeping the image's phase.

    Args:
        image, reference: (C,H,W) float32; channel c of the reference serves channel c of the image.
        radius: half-side, in frequency bins, of the square low-frequency window that is mixed.
        weight: 0 keeps the image, 1 swaps the window's amplitude entirely (FDA).
    Returns: (C,H,W) float32, not clipped.
    """
    spectrum = scipy.fft.rfft2(image, axes=(-2, -1))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    reference_amplitude = np.abs(scipy.fft.rfft2(reference, axes=(-2, -1)))
    window = low_frequency_mask(image.shape[-2:], radius) * np.float32(weight)
    mixed = amplitude + window * (reference_amplitude - amplitude)
    out = scipy.fft.irfft2(mixed * np.exp(1j * phase), s=image.shape[-2:], axes=(-2, -1))
    return out.astype(np.float32)


@dataclass(frozen=True)
class FourierAmplitudeMix:
    """``(image (C,H,W) float32 in [0,1], label (H,W), rng) -> (image, label)``: amplitude mixing, label unchanged.

    Attributes:
        window_fraction: range of the window's half-side as a fraction of the image side (FDA's beta; at least one
            frequency bin).
        weight_range: range of the mixing weight (1 = FDA's swap).
    """

    window_fraction: tuple[float, float] = (0.01, 0.1)
    weight_range: tuple[float, float] = (0.5, 1.0)

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        curve = random_bezier_curve(rng, CURVE_KINDS[rng.integers(len(CURVE_KINDS))])
        radius = max(1, round(rng.uniform(*self.window_fraction) * min(image.shape[-2:])))
        weight = rng.uniform(*self.weight_range)
        out = apply_channelwise(lambda x: amplitude_mix(x, apply_curve(x, curve), radius, weight), image)
        return np.clip(out, 0.0, 1.0), label
