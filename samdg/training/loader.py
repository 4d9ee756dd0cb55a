"""Batches for training and validation: sampled slices -> SAM channels -> input size -> augmentation.

Per sample (one :class:`SliceRef`): ``slice_to_sam_channels`` picks the plan's three channels, an optional
in-plane crop (``plans.sam.inplane_crop``; centred on a random foreground pixel for oversampled samples) is
taken, ``fit_to_input`` / ``fit_label_to_input`` resize the longest side to the variant's input size and pad,
then the augmentation preset runs with the sample's own seed. The backbone applies its intensity convention
itself, so images stay in [0,1].

:class:`SliceBatches` is a map-style torch Dataset whose index is ``(epoch, iteration)`` and whose item is a whole
batch (this rank's share of the global batch), so torch's ``DataLoader`` workers build batches in parallel while
the content of every batch stays a function of the index only.

Augmented views (the augmented embedding cache, see :mod:`samdg.training.embedding_cache`): with ``views`` K > 0
each draw picks one of K views of its slice at random, and the view is augmented with a seed fixed by
``view_seed``, the slice, the view and the refresh round instead of the draw's own seed, so a view is the same
(image, label) pair whenever it is drawn. The batch's ``keys`` then name the view.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from samdg.preprocessing.sam_input import fit_label_to_input, fit_to_input, slice_to_sam_channels
from samdg.training.augmentation import build_augmentation, seeded_global_rng
from samdg.training.dataset import PreprocessedCase
from samdg.training.embedding_cache import refresh_round, view_key
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
        views: int = 0,
        refresh_epochs: int = 0,
        view_seed: int = 0,
    ) -> None:
        self.cases = cases
        self.views = int(views)
        self.refresh_epochs = int(refresh_epochs)
        self.view_seed = int(view_seed)
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

    def make_sample(self, ref: SliceRef, augmentation_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One slice -> (image (3,S,S) float32 in [0,1], label (S,S) int64), augmented with ``augmentation_seed``
        (default: the draw's own seed)."""
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
            with seeded_global_rng(ref.seed if augmentation_seed is None else augmentation_seed):
                image, label = augment(image, label)
        return image.astype(np.float32, copy=False), label.astype(np.int64, copy=False)

    def view_of(self, ref: SliceRef, epoch: int) -> tuple[str, int]:
        """(cache key, augmentation seed) of the view a draw takes: one of ``views`` views of its slice, chosen
        with the draw's seed; the seed of the view depends on the slice, the view and the round, not the draw."""
        view = int(rng_for(ref.seed, 2).integers(self.views))
        current_round = refresh_round(epoch, self.refresh_epochs)
        case_number = int.from_bytes(hashlib.sha256(ref.case_id.encode()).digest()[:8], "little")
        seed = int(rng_for(self.view_seed, case_number, ref.slice_index, view, current_round).integers(2**63))
        return view_key(ref.key, current_round, view), seed

    def batch_from_refs(self, refs: list[SliceRef], epoch: int = 0) -> dict[str, Any]:
        if self.views:
            keys, seeds = zip(*[self.view_of(ref, epoch) for ref in refs])
        else:
            keys, seeds = [ref.key for ref in refs], [None] * len(refs)
        samples = [self.make_sample(ref, seed) for ref, seed in zip(refs, seeds)]
        return {
            "image": torch.from_numpy(np.stack([s[0] for s in samples])),
            "target": torch.from_numpy(np.stack([s[1] for s in samples])),
            "domain": [self.cases[ref.case_id].domain for ref in refs],
            "keys": list(keys),
        }

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        epoch, iteration = index
        return self.batch_from_refs(self.sampler.rank_batch(epoch, iteration, self.rank, self.world_size), epoch)


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
