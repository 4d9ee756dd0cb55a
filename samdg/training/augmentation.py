"""Data augmentation presets (batchgenerators), applied to one SAM-sized sample at a time.

Samples arrive already fitted to the input (image (3,S,S) in [0,1], label (S,S)), so every transform works on a
square of the variant's size. Intensity ranges are those of nnU-Net's 2D pipeline rescaled to [0,1] data
(nnU-Net augments z-scored data, whose standard deviation is about 4x larger): noise variance 0.1 -> 0.01, etc.
After augmentation the image is clipped back to [0,1], the range every backbone expects.

Presets (``plans.training.augmentation``):

- ``default``: nnU-Net's 2D set: rotation (p .2, +-180 deg) and scaling (p .2, 0.7-1.4), Gaussian noise (p .1),
  Gaussian blur (p .2), multiplicative brightness (p .15), contrast (p .15), simulated low resolution (p .25),
  gamma with and without inversion (p .1 / .3), mirroring of both axes.
- ``dg_strong``: the intensity-heavy set for domain shift (close to nnU-Net's DA5): everything above more often
  and wider (brightness 0.6-1.5 plus additive shifts, contrast 0.5-2, low resolution down to 0.25, gamma 0.5-2,
  stronger blur and noise), plus blank rectangles (p .2).
- ``none``: no augmentation (what the embedding cache requires).

The domain-generalisation presets add one transform of :mod:`samdg.training.dg_augmentations` to the ``default``
set, right after the spatial transform, applied to 80 % of the samples (``DG_PROBABILITY``; the rest keep the
source's appearance):

- ``dg_gin``: GIN random convolutions, half of them as IPA (two GIN views blended by a smooth mask).
- ``dg_slaug``: SLAug location-scale with Bezier intensity curves, global (GLA) or class-wise (LLA) half the time.
- ``dg_fourier``: low-frequency Fourier amplitude mixing with an intensity-remapped view of the same slice.
- ``dg_all``: one of the three above, chosen at random per sample.

All random draws use numpy's and Python's global generators, seeded per sample by the caller
(:func:`seeded_global_rng`), so a sample is the same whichever worker or rank produces it.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Callable, Iterator

import numpy as np

from samdg.errors import SamdgError

PRESETS = ("default", "dg_strong", "none", "dg_gin", "dg_slaug", "dg_fourier", "dg_all")
DG_PROBABILITY = 0.8


def _default(size: int) -> list:
    from batchgenerators.transforms.color_transforms import (
        BrightnessMultiplicativeTransform,
        ContrastAugmentationTransform,
        GammaTransform,
    )
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    return [
        SpatialTransform((size, size), patch_center_dist_from_border=None, do_elastic_deform=False,
                         do_rotation=True, angle_x=(-np.pi, np.pi), p_rot_per_sample=0.2,
                         do_scale=True, scale=(0.7, 1.4), p_scale_per_sample=0.2,
                         border_mode_data="constant", border_cval_data=0, order_data=3,
                         border_mode_seg="constant", border_cval_seg=0, order_seg=1, random_crop=False),
        GaussianNoiseTransform(noise_variance=(0, 0.01), p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=False, p_per_sample=0.2),
        BrightnessMultiplicativeTransform((0.75, 1.25), per_channel=False, p_per_sample=0.15),
        ContrastAugmentationTransform((0.75, 1.25), per_channel=False, p_per_sample=0.15),
        SimulateLowResolutionTransform(zoom_range=(0.5, 1), per_channel=False, order_downsample=0,
                                       order_upsample=3, p_per_sample=0.25),
        GammaTransform((0.7, 1.5), invert_image=True, per_channel=False, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=False, retain_stats=True, p_per_sample=0.3),
        MirrorTransform(axes=(0, 1)),
    ]


def _dg_strong(size: int) -> list:
    from batchgenerators.transforms.color_transforms import (
        BrightnessMultiplicativeTransform,
        BrightnessTransform,
        ContrastAugmentationTransform,
        GammaTransform,
    )
    from batchgenerators.transforms.noise_transforms import (
        BlankRectangleTransform,
        GaussianBlurTransform,
        GaussianNoiseTransform,
    )
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    return [
        SpatialTransform((size, size), patch_center_dist_from_border=None, do_elastic_deform=False,
                         do_rotation=True, angle_x=(-np.pi, np.pi), p_rot_per_sample=0.3,
                         do_scale=True, scale=(0.65, 1.6), p_scale_per_sample=0.3,
                         border_mode_data="constant", border_cval_data=0, order_data=3,
                         border_mode_seg="constant", border_cval_seg=0, order_seg=1, random_crop=False),
        GaussianNoiseTransform(noise_variance=(0, 0.02), p_per_sample=0.2),
        GaussianBlurTransform((0.3, 1.5), different_sigma_per_channel=False, p_per_sample=0.3),
        BrightnessMultiplicativeTransform((0.6, 1.5), per_channel=False, p_per_sample=0.3),
        BrightnessTransform(0.0, 0.05, per_channel=False, p_per_sample=0.2),
        ContrastAugmentationTransform((0.5, 2.0), per_channel=False, p_per_sample=0.3),
        SimulateLowResolutionTransform(zoom_range=(0.25, 1), per_channel=False, order_downsample=0,
                                       order_upsample=3, p_per_sample=0.3),
        GammaTransform((0.5, 2.0), invert_image=True, per_channel=False, retain_stats=True, p_per_sample=0.2),
        GammaTransform((0.5, 2.0), invert_image=False, per_channel=False, retain_stats=True, p_per_sample=0.4),
        BlankRectangleTransform([[max(1, size // 20), max(2, size // 3)]] * 2, rectangle_value=np.mean,
                                num_rectangles=(1, 5), force_square=False, p_per_sample=0.2, p_per_channel=1.0),
        MirrorTransform(axes=(0, 1)),
    ]


def _dg_choices(preset: str) -> tuple:
    from samdg.training.dg_augmentations import FourierAmplitudeMix, LocationScale, RandomConvolution

    gin, slaug, fourier = RandomConvolution(ipa_probability=0.5), LocationScale(), FourierAmplitudeMix()
    return {"dg_gin": (gin,), "dg_slaug": (slaug,), "dg_fourier": (fourier,), "dg_all": (gin, slaug, fourier)}[preset]


def _with_dg(size: int, preset: str) -> list:
    """The ``default`` set with the preset's DG transform after the spatial transform (before noise, blur, ...)."""
    from samdg.training.dg_augmentations import RandomDGTransform

    transforms = _default(size)
    transforms.insert(1, RandomDGTransform(_dg_choices(preset), DG_PROBABILITY))
    return transforms


Augment = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def build_augmentation(preset: str, size: int) -> Augment | None:
    """``augment(image (3,S,S) float32, label (S,S) int) -> (image, label)``, or None for ``none``."""
    if preset not in PRESETS:
        raise SamdgError(f"augmentation preset '{preset}' is unknown; choose one of {', '.join(PRESETS)}")
    if preset == "none":
        return None
    if preset == "default":
        transforms = _default(size)
    elif preset == "dg_strong":
        transforms = _dg_strong(size)
    else:
        transforms = _with_dg(size, preset)

    def augment(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sample = {"data": image[None].astype(np.float32, copy=True), "seg": label[None, None].astype(np.float32)}
        with warnings.catch_warnings():
            # batchgenerators' BlankRectangleTransform calls numpy's deprecated random_integers
            warnings.simplefilter("ignore", DeprecationWarning)
            for transform in transforms:
                sample = transform(**sample)
        out_image = np.clip(sample["data"][0], 0.0, 1.0).astype(np.float32, copy=False)
        out_label = np.rint(sample["seg"][0, 0]).astype(label.dtype)
        return out_image, out_label

    return augment


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's and Python's global generators (which batchgenerators uses) and restore them afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
