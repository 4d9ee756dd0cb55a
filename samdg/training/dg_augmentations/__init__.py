"""Domain-generalisation intensity augmentations from the literature, one module each.

Every transform is a frozen dataclass called as ``transform(image, label, rng) -> (image, label)`` on one sample:
image (C,S,S) float32 in [0,1], label (S,S) int, ``rng`` a ``numpy.random.Generator``. The output image is float32
in [0,1] and the label is returned unchanged (intensity only; class-wise LLA reads it). Being pure functions of
their inputs, they serve both the per-sample batchgenerators pipeline (through :class:`RandomDGTransform`) and any
code that augments a slice directly.

- :class:`RandomConvolution`: GIN and IPA (Ouyang et al., IEEE TMI 2022).
- :class:`LocationScale`: SLAug's global and class-wise location-scale augmentation (Su et al., AAAI 2023).
- :class:`FourierAmplitudeMix`: low-frequency amplitude mixing (Yang & Soatto CVPR 2020; Xu et al. CVPR 2021).
"""

from samdg.training.dg_augmentations.fourier import FourierAmplitudeMix
from samdg.training.dg_augmentations.location_scale import LocationScale
from samdg.training.dg_augmentations.per_sample import DGTransform, RandomDGTransform
from samdg.training.dg_augmentations.random_conv import RandomConvolution

__all__ = ["DGTransform", "FourierAmplitudeMix", "LocationScale", "RandomConvolution", "RandomDGTransform"]
