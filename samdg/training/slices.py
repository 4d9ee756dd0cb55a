"""Slices -> per-class probabilities with one or several models: batching, in-plane tiling and mirroring TTA.

Shared by training's whole-volume validation and by the predictor (:mod:`samdg.inference`), so both see a
slice the same way; it lives here, below inference, because inference loads what training writes.

Every slice of a batch goes through the model in one call (``method.predict`` on (B,3,L,L)); the SAM input is
built by the same :mod:`samdg.preprocessing.sam_input` functions the training loader uses, so a slice is seen at
the scale training saw it:

- whole slices (``plans.sam.inplane_crop`` null): longest side fitted to the input size, zero-padded;
- in-plane crops (``inplane_crop`` set and smaller than the slice): the slice is covered by crop-sized windows
  that overlap by half, each fitted to the input, and the window probabilities are blended with a Gaussian
  weight (sigma = window / 8, as nnU-Net's sliding window) so window borders do not show.

Mirroring test-time augmentation flips the slices along rows, columns and both before they are fitted, flips the
probabilities back and averages the four passes; probabilities (after the sigmoid) are averaged over passes and
over the models of a fold ensemble.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from samdg.models.layers.box_prompts import crop_boxes, flip_boxes, scale_boxes
from samdg.preprocessing.sam_input import fit_to_input, restore_from_input, volume_to_sam_channels
from samdg.utils.device import autocast

MIRROR_AXES: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def window_starts(length: int, window: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` with about half-window overlap."""
    if window >= length:
        return [0]
    steps = -(-(length - window) * 2 // window)  # ceil((length - window) / (window / 2))
    return [round(i * (length - window) / steps) for i in range(steps + 1)]


def gaussian_weight(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(height, width) weights peaking at the window centre, sigma = 1/8 of the side, never exactly 0."""
    axes = []
    for size in (height, width):
        position = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
        axes.append(torch.exp(-0.5 * (position / max(size / 8, 1e-3)) ** 2))
    weight = axes[0][:, None] * axes[1][None, :]
    return (weight / weight.max()).clamp_min(1e-3)


class SlicePredictor:
    """Per-class probabilities for batches of (B,3,H,W) slices in [0,1].

    Args:
        methods: trained methods (one per fold), already on ``device`` and in eval mode.
        input_size: the SAM variant's square input side.
        inplane_crop: (rows, cols) window of ``plans.sam.inplane_crop``, or None for whole slices.
        mirror_axes: flip combinations to average (``((),)`` = no TTA; :data:`MIRROR_AXES` = full in-plane TTA).
        device: where the models run.
        autocast_dtype: torch dtype for autocast on the device (None = full precision).
    """

    def __init__(self, methods: Sequence[torch.nn.Module], input_size: int, inplane_crop: Sequence[int] | None,
                 mirror_axes: Sequence[tuple[int, ...]], device: torch.device,
                 autocast_dtype: torch.dtype | None) -> None:
        self.methods = list(methods)
        self.input_size = int(input_size)
        self.inplane_crop = tuple(int(v) for v in inplane_crop) if inplane_crop else None
        self.mirror_axes = tuple(tuple(a) for a in mirror_axes)
        self.device = device
        self.autocast_dtype = autocast_dtype

    def _window_probabilities(self, slices: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,h,w) on the device -> (B,K,h,w) float32 probabilities averaged over TTA passes and models.
        ``boxes`` (B,K,4) in window pixels (NaN = class empty): box-prompted (``method.predict_with_boxes``)."""
        height, width = slices.shape[-2:]
        total = None
        for axes in self.mirror_axes:
            flipped = slices.flip(axes) if axes else slices
            inputs, scaled_hw = fit_to_input(flipped, self.input_size)
            if boxes is not None:  # the boxes take the slice's path: flipped, then resized into the input
                input_boxes = scale_boxes(flip_boxes(boxes, axes, height, width), (height, width), scaled_hw)
            for method in self.methods:
                with autocast(self.device, self.autocast_dtype):
                    logits = method.predict(inputs) if boxes is None else method.predict_with_boxes(inputs,
                                                                                                   input_boxes)
                logits = restore_from_input(logits.float(), scaled_hw, (height, width))
                probabilities = torch.sigmoid(logits)
                probabilities = probabilities.flip(axes) if axes else probabilities
                total = probabilities if total is None else total.add_(probabilities)
        return total.div_(len(self.mirror_axes) * len(self.methods))

    @torch.inference_mode()
    def __call__(self, slices: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) float in [0,1] (any device) -> (B,K,H,W) float32 probabilities on the CPU.

        ``boxes``: optional (B,K,4) box prompts (x0, y0, x1, y1) in slice pixels, NaN = no box (class empty)."""
        slices = slices.to(self.device, dtype=torch.float32, non_blocking=True)
        boxes = boxes.to(self.device, dtype=torch.float32) if boxes is not None else None
        height, width = slices.shape[-2:]
        if self.inplane_crop is None or (self.inplane_crop[0] >= height and self.inplane_crop[1] >= width):
            return self._window_probabilities(slices, boxes).cpu()
        window_h, window_w = min(self.inplane_crop[0], height), min(self.inplane_crop[1], width)
        weight = gaussian_weight(window_h, window_w, self.device)
        accumulated, weights = None, torch.zeros((height, width), device=self.device)
        for top in window_starts(height, window_h):
            for left in window_starts(width, window_w):
                rows, cols = slice(top, top + window_h), slice(left, left + window_w)
                window_boxes = crop_boxes(boxes, top, left, window_h, window_w) if boxes is not None else None
                probabilities = self._window_probabilities(slices[..., rows, cols], window_boxes)
                if accumulated is None:
                    accumulated = torch.zeros((*probabilities.shape[:2], height, width), device=self.device)
                accumulated[..., rows, cols] += probabilities * weight
                weights[rows, cols] += weight
        return (accumulated / weights).cpu()

    def predict_volume(self, data: np.ndarray, channel_mapping, batch_size: int,
                       before_batch: Callable[[list[int]], None] | None = None,
                       boxes: np.ndarray | None = None) -> np.ndarray:
        """(C,S,H,W) preprocessed case -> (K,S,H,W) float32 probabilities, ``batch_size`` slices a pass.

        ``before_batch(slice indices)`` runs before each batch (the trainer points its embedding cache there).
        ``boxes``: optional (S,K,4) box prompts per slice and class in slice pixels (NaN = none: class empty).
        """
        num_slices = data.shape[1]
        probabilities = None
        for start in range(0, num_slices, batch_size):
            indices = list(range(start, min(start + batch_size, num_slices)))
            slices = torch.from_numpy(np.ascontiguousarray(volume_to_sam_channels(data, channel_mapping, indices)))
            if before_batch is not None:
                before_batch(indices)
            batch_boxes = torch.from_numpy(np.asarray(boxes[indices], dtype=np.float32)) if boxes is not None else None
            batch = self(slices.float(), batch_boxes).transpose(0, 1).numpy()
            if probabilities is None:
                probabilities = np.empty((batch.shape[0], num_slices, *data.shape[2:]), dtype=np.float32)
            probabilities[:, start:start + len(indices)] = batch
        return probabilities
