"""Location-scale augmentation with random Bezier intensity curves (SLAug's GLA and LLA).

Su et al., "Rethinking data augmentation for single-source domain generalization in medical image segmentation",
AAAI 2023. A domain shift in medical images is mostly a change of the intensity mapping of the same anatomy, so the
image is passed through a random intensity curve and then a random scale and shift ("location-scale"):

- GLA (global location-scale augmentation): one curve, scale and shift for the whole image.
- LLA (class-wise local location-scale augmentation): a different curve, scale and shift inside the region of each
  label class (background included), so that classes change contrast against each other. Region masks are
  Gaussian-smoothed before blending, so the transition at class borders is gradual (no new edges along the label).

Deviation from the paper: SLAug's saliency-balancing fusion mixes the GLA and LLA views with a map of the model's
gradients; that needs the model inside the data pipeline, so it is left out. Each sample gets either GLA or LLA
(``local_probability``).

The same curve is applied to every channel, so replicated grey channels stay identical (as at test time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from samdg.training.dg_augmentations.channels import apply_channelwise

CURVE_KINDS = ("increasing", "decreasing", "non_monotonic")


def random_bezier_curve(rng: np.random.Generator, kind: str, points: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A random cubic Bezier intensity curve on [0,1] as ``(xs, ys)`` samples, both (points,), xs non-decreasing.

    The curve runs from (0,0) to (1,1) through two random control points. With the control points' y sorted it is
    monotonic increasing; ``decreasing`` flips it (contrast inversion); ``non_monotonic`` keeps the y unsorted, so
    it can fold intensities back (for example dark and bright tissue both mapped to grey).
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"curve kind '{kind}' is not one of {CURVE_KINDS}")
    control = rng.random((2, 2))  # two control points (x, y)
    control_x = np.array([0.0, control[0, 0], control[1, 0], 1.0])
    inner_y = control[:, 1] if kind == "non_monotonic" else np.sort(control[:, 1])
    control_y = np.array([0.0, inner_y[0], inner_y[1], 1.0])
    t = np.linspace(0.0, 1.0, points)
    bernstein = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3], axis=1)  # (points, 4)
    xs, ys = bernstein @ control_x, bernstein @ control_y  # xs is non-decreasing for control x in [0,1]
    if kind == "decreasing":
        ys = 1.0 - ys
    return xs, ys


def apply_curve(image: np.ndarray, curve: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Map every intensity of ``image`` (any shape, values in [0,1]) through ``curve`` -> float32, same shape."""
    xs, ys = curve
    return np.interp(image, xs, ys).astype(np.float32)


@dataclass(frozen=True)
class LocationScale:
    """``(image (C,H,W) float32 in [0,1], label (H,W) int, rng) -> (image, label)``: GLA or LLA (label unchanged).

    Attributes:
        local_probability: chance that a sample gets LLA (class-wise) instead of GLA.
        scale_range, location_range: uniform ranges of the scale and the shift applied after the curve.
        curve_kinds: kinds of Bezier curve drawn from (uniformly), see :func:`random_bezier_curve`.
        border_sigma_fraction: LLA's mask smoothing, as a fraction of the image side (in pixels: at least 1).
    """

    local_probability: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.2)
    location_range: tuple[float, float] = (-0.1, 0.1)
    curve_kinds: tuple[str, ...] = CURVE_KINDS
    border_sigma_fraction: float = 0.01

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.local_probability:
            out = apply_channelwise(lambda x: self.local(x, label, rng), image)
        else:
            out = apply_channelwise(lambda x: self.location_scale(x, rng), image)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False), label

    def location_scale(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random curve, then ``scale * curve(image) + location`` (GLA); not clipped. Any shape -> same."""
        curve = random_bezier_curve(rng, self.curve_kinds[rng.integers(len(self.curve_kinds))])
        scale, location = rng.uniform(*self.scale_range), rng.uniform(*self.location_range)
        return np.float32(scale) * apply_curve(image, curve) + np.float32(location)

    def local(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """LLA: each class region gets its own :meth:`location_scale`, blended by smoothed class masks."""
        sigma = max(1.0, self.border_sigma_fraction * max(label.shape))
        out = np.zeros_like(image, dtype=np.float32)
        for value in np.unique(label):
            # Smoothed one-hot masks of all classes still sum to 1 at every pixel (the filter preserves constants).
            weight = gaussian_filter((label == value).astype(np.float32), sigma, mode="nearest")
            reached = weight > 1e-4  # the class region and its blurred border: the only pixels this curve affects
            out[:, reached] += weight[reached] * self.location_scale(image[:, reached], rng)
        return out
