"""Batches for training and validation: sampled slices -> SAM channels -> input size -> augmentation.

Per sample (one :class:`SliceRef`): ``slice_to_sam_channels`` picks the plan's three channels, an optional
in-plane crop (``plans.sam.inplane_crop``; centred on a random foreground pixel for oversampled samples) is
taken, ``fit_to_input`` / ``fit_label_to_input`` resize the longest side to the variant's input size and pad,
then the augmentation preset runs with the sample's own seed. The backbone applies its intensity convention
itself, so images stay in [0,1].

:class:`SliceBatches` is a map-style torch Dataset whose index is ``(epoch, iteration)`` and whose item is a whole
batch (this rank's share of the global batch), so torch's ``DataLoader`` workers build batches in parallel while
the content of every batch stays a function of the index only.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from samdg.preprocessing.sam_input import fit_label_to_input, fit_to_input, slice_to_sam_channels
from samdg.training.augmentation import build_augmentation, seeded_global_rng
from samdg.training.dataset import PreprocessedCase
from samdg.training.sampler import SliceRef, SliceSampler, rng_for


def crop_window(shape: tuple[int, int], crop: tuple[int, int], rng: np.random.Generator,
                centre: tuple[int, int] | None = None) -> tuple[slice, slice]:
    """A (rows, cols) window of at most ``crop`` inside ``shape``; around ``centre`` when given, else random."""
    windows = []
    for axis in range(2):
        extent, size = int(shape[axis]), min(int(crop[axis]), int(shape[axis]))
        if centre is not None:
            start = int(centre[axis]) - size // 2
        else:
            start = int(rng.integers(extent - size + 1))
        start = min(max(start, 0), extent - size)
        windows.append(slice(start, start + size))
    return windows[0], windows[1]


class SliceBatches(Dataset):
    """Item ``(epoch, iteration)`` -> this rank's batch as a dict of tensors (see :meth:`make_sample`)."""

    def __init__(
        self,
        cases: dict[str, PreprocessedCase],
        sampler: SliceSampler,
        channel_mapping: Any,
        input_size: int,
        augmentation: str = "none",
        inplane_crop: tuple[int, int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cases = cases
        self.sampler = sampler
        self.channel_mapping = channel_mapping
        self.input_size = int(input_size)
        self.augmentation = augmentation
        self.inplane_crop = tuple(inplane_crop) if inplane_crop else None
        self.rank = rank
        self.world_size = world_size
        self._augment: Callable | None = None
        self._augment_built = False

    def _augmenter(self) -> Callable | None:
        if not self._augment_built:  # built lazily, inside the worker process
            self._augment = build_augmentation(self.augmentation, self.input_size)
            self._augment_built = True
        return self._augment

    def make_sample(self, ref: SliceRef) -> tuple[np.ndarray, np.ndarray]:
        """One slice -> (image (3,S,S) float32 in [0,1], label (S,S) int64)."""
        case = self.cases[ref.case_id]
        # Copies: the memory-mapped case files are read-only.
        image = np.array(slice_to_sam_channels(case.data(), ref.slice_index, self.channel_mapping), dtype=np.float32)
        label = np.array(case.seg()[0, ref.slice_index])
        if self.inplane_crop is not None:
            rng = rng_for(ref.seed, 1)
            centre = None
            if ref.force_foreground:
                rows, cols = np.nonzero(label > 0)
                if rows.size:
                    pick = int(rng.integers(rows.size))
                    centre = (int(rows[pick]), int(cols[pick]))
            rows_window, cols_window = crop_window(label.shape, self.inplane_crop, rng, centre)
            image, label = image[:, rows_window, cols_window], label[rows_window, cols_window]
        image, _ = fit_to_input(np.ascontiguousarray(image), self.input_size)
        label, _ = fit_label_to_input(np.ascontiguousarray(label), self.input_size)
        augment = self._augmenter()
        if augment is not None:
            with seeded_global_rng(ref.seed):
                image, label = augment(image, label)
        return image.astype(np.float32, copy=False), label.astype(np.int64, copy=False)

    def batch_from_refs(self, refs: list[SliceRef]) -> dict[str, Any]:
        samples = [self.make_sample(ref) for ref in refs]
        return {
            "image": torch.from_numpy(np.stack([s[0] for s in samples])),
            "target": torch.from_numpy(np.stack([s[1] for s in samples])),
            "domain": [self.cases[ref.case_id].domain for ref in refs],
            "keys": [ref.key for ref in refs],
        }

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        epoch, iteration = index
        return self.batch_from_refs(self.sampler.rank_batch(epoch, iteration, self.rank, self.world_size))


class EpochIndices(Sampler):
    """Yields ``(epoch, 0) .. (epoch, n - 1)`` for the epoch set with :meth:`set_epoch` (main process)."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in range(self.iterations)])

    def __len__(self) -> int:
        return self.iterations


def make_loader(batches: SliceBatches, iterations: int, num_workers: int,
                pin_memory: bool) -> tuple[DataLoader, EpochIndices]:
    """A DataLoader over one epoch of batches, and the index sampler whose epoch the trainer sets."""
    indices = EpochIndices(iterations)
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=indices,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(0),  # keeps the global torch RNG untouched (workers draw none)
        collate_fn=_identity,
    )
    return loader, indices


def _identity(batch: dict) -> dict:
    return batch
