"""Global intensity non-linear augmentation (GIN) with optional interventional pseudo-correlation augmentation (IPA).

Ouyang et al., "Causality-inspired single-source domain generalization for medical image segmentation", IEEE TMI
2022. Shape is what transfers across scanners; texture and intensity mapping are not. GIN passes the image through
a shallow convolutional network with fresh random weights for every sample (each layer a 1x1 or 3x3 convolution,
leaky ReLU between layers), which remaps intensities non-linearly and locally re-textures them while keeping
shapes, then mixes the result with the input by a random ``alpha``. IPA blends two GIN views of the same image
with a smooth random mask, so the appearance of one structure does not predict that of another.

Choices made here (the papers' setting differs where noted):

- The input is standardised (zero mean, unit variance) before the network and the weights are drawn from
  N(0, 1/fan_in), biases from N(0, 1): every layer keeps its input's scale, so the leaky ReLU's bend falls inside
  the data at every depth.
- The network's output is rescaled to the input's [min, max] before mixing (the paper matches the Frobenius norm
  after mixing instead): both terms of the mix then live on one scale, and the result stays in the input's range,
  i.e. in [0,1] as every backbone expects.
- By default one single-channel network is applied to every channel (shared weights and ``alpha``; each channel
  standardised and rescaled on its own), so replicated grey channels stay identical and neighbouring slices get
  the same mapping; ``mix_channels=True`` uses a C -> C network that
  also mixes channels, as for RGB input in the paper's code.
- IPA's smooth mask is a coarse grid of uniform random values upsampled with a cubic spline (the paper uses a
  B-spline field as well), rescaled to [0,1].

Plain numpy (shifted multiply-adds: a few channels are faster this way than through a convolution library, and
exact whatever the thread count); weights come from the numpy ``rng``, so a sample is a function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import zoom

from samdg.training.dg_augmentations.channels import apply_channelwise


def smooth_random_mask(shape: tuple[int, int], control_points: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (H,W) float32 in [0,1]: a (control_points, control_points) grid, cubic-upsampled."""
    grid = rng.random((control_points, control_points))
    field = zoom(grid, (shape[0] / control_points, shape[1] / control_points), order=3, mode="nearest",
                 grid_mode=True)
    low, high = field.min(), field.max()
    return ((field - low) / max(high - low, 1e-6)).astype(np.float32)


def conv2d_reflect(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Same-size 2D convolution (cross-correlation) with reflect padding.

    Args: x (Cin,H,W) float32, weight (Cout,Cin,k,k) with k odd, bias (Cout,). Returns (Cout,H,W) float32.
    """
    out_channels, in_channels, size, _ = weight.shape
    height, width = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (size // 2,) * 2, (size // 2,) * 2), mode="reflect") if size > 1 else x
    out = np.empty((out_channels, height, width), np.float32)
    out[:] = bias[:, None, None]
    for dy in range(size):
        for dx in range(size):
            shifted = padded[:, dy:dy + height, dx:dx + width]
            for o in range(out_channels):
                for i in range(in_channels):
                    out[o] += np.float32(weight[o, i, dy, dx]) * shifted[i]
    return out


def rescale_to_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Affinely map ``values`` (any shape) onto [low, high]; a constant array maps to ``low``."""
    v_low, v_high = float(values.min()), float(values.max())
    span = v_high - v_low
    if span <= 1e-12:
        return np.full_like(values, low)
    return ((values - v_low) * ((high - low) / span) + low).astype(values.dtype, copy=False)


@dataclass(frozen=True)
class RandomConvolution:
    """``(image (C,H,W) float32 in [0,1], label (H,W), rng) -> (image, label)``: a GIN (or IPA) view, label unchanged.

    Attributes:
        layers: convolutions in the random network.
        hidden_channels: width of the layers between input and output.
        kernel_sizes: each layer's kernel size is drawn from these.
        negative_slope: of the leaky ReLU after every layer but the last.
        ipa_probability: chance that the output is IPA (two GIN views blended by a smooth mask) instead of GIN.
        ipa_control_points: side of the IPA mask's control grid (larger = finer blobs).
        mix_channels: a C -> C network (mixes channels) instead of one 1 -> 1 network shared by all channels.
    """

    layers: int = 4
    hidden_channels: int = 2
    kernel_sizes: tuple[int, ...] = (1, 3)
    negative_slope: float = 0.2
    ipa_probability: float = 0.0
    ipa_control_points: int = 4
    mix_channels: bool = False

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        view = self.gin(image, rng)
        if rng.random() < self.ipa_probability:
            other = self.gin(image, rng)
            mask = smooth_random_mask(image.shape[-2:], self.ipa_control_points, rng)[None]
            view = mask * view + (1.0 - mask) * other
        return np.clip(view, 0.0, 1.0).astype(np.float32, copy=False), label

    def gin(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One GIN view: ``alpha * network(image) + (1 - alpha) * image``, (C,H,W) -> (C,H,W) in the input's range."""
        if self.mix_channels:
            weights = self._draw_weights(image.shape[0], rng)
            return self._mix(image, weights, np.float32(rng.random()))
        weights, alpha = self._draw_weights(1, rng), np.float32(rng.random())
        return apply_channelwise(lambda x: np.concatenate([self._mix(c[None], weights, alpha) for c in x]), image)

    def _mix(self, image: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]], alpha: np.float32) -> np.ndarray:
        """(C,H,W) standardised, through the network, rescaled to the input's range, mixed with the input."""
        standardised = ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)
        network_out = rescale_to_range(self._network(standardised, weights), float(image.min()), float(image.max()))
        return alpha * network_out + (1 - alpha) * image

    def _draw_weights(self, io_channels: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (Cout,Cin,k,k), bias (Cout,)) per layer; weights ~ N(0, 1/fan_in), biases ~ N(0, 1)."""
        layers, in_channels = [], io_channels
        for layer in range(self.layers):
            out_channels = io_channels if layer == self.layers - 1 else self.hidden_channels
            size = int(self.kernel_sizes[rng.integers(len(self.kernel_sizes))])
            fan_in = in_channels * size * size
            weight = rng.standard_normal((out_channels, in_channels, size, size)) / np.sqrt(fan_in)
            layers.append((weight, rng.standard_normal(out_channels)))
            in_channels = out_channels
        return layers

    def _network(self, x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(Cin,H,W) -> (Cout,H,W): the convolutions, with a leaky ReLU after all but the last."""
        for layer, (weight, bias) in enumerate(weights):
            x = conv2d_reflect(x, weight, bias)
            if layer < len(weights) - 1:
                x = np.where(x > 0, x, np.float32(self.negative_slope) * x)
        return x
