"""Which slices make up each batch: random cases, random slices, and nnU-Net's foreground oversampling.

Every draw is a pure function of ``(seed, stream, epoch, iteration)``, so:

- a resumed run draws exactly the batches an uninterrupted run would (the sampler has no state to save);
- under DDP the *global* batch is drawn identically on every rank and rank r keeps its r-th contiguous share,
  so N processes see the same samples, in the same order, as one process with the whole batch;
- each sample carries its own seed for augmentation, so an augmented sample does not depend on the worker or
  the rank that produced it.

Foreground oversampling follows nnU-Net: in a global batch of B samples, positions ``j >= round(B * (1 - p))``
are forced to contain foreground (a random foreground label present in the case, then a random slice holding it);
with B = 2 and p = 0.33 that is one of the two samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samdg.training.dataset import PreprocessedCase

TRAIN_STREAM = 0
VALIDATION_STREAM = 1


@dataclass(frozen=True)
class SliceRef:
    case_id: str
    slice_index: int
    force_foreground: bool
    seed: int  # per-sample seed for crops and augmentation

    @property
    def key(self) -> str:
        """Identity of the (unaugmented) input image: used by the embedding cache."""
        return f"{self.case_id}:{self.slice_index}"


def rng_for(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


class SliceSampler:
    def __init__(
        self,
        cases: dict[str, PreprocessedCase],
        case_ids: list[str],
        global_batch_size: int,
        oversample_foreground: float,
        seed: int,
        stream: int = TRAIN_STREAM,
    ) -> None:
        self.cases = cases
        self.case_ids = sorted(case_ids)
        self.global_batch_size = int(global_batch_size)
        self.oversample_foreground = float(oversample_foreground)
        self.seed = int(seed)
        self.stream = int(stream)
        self.first_forced = round(self.global_batch_size * (1.0 - self.oversample_foreground))

    def global_batch(self, epoch: int, iteration: int) -> list[SliceRef]:
        rng = rng_for(self.seed, self.stream, epoch, iteration)
        refs = []
        for position in range(self.global_batch_size):
            case = self.cases[self.case_ids[int(rng.integers(len(self.case_ids)))]]
            force = position >= self.first_forced
            table = case.slices_with_label() if force else {}
            if table:
                label = sorted(table)[int(rng.integers(len(table)))]
                slice_index = table[label][int(rng.integers(len(table[label])))]
            else:
                slice_index = int(rng.integers(case.num_slices))
            refs.append(SliceRef(case.case_id, int(slice_index), force, int(rng.integers(2**31 - 1))))
        return refs

    def rank_batch(self, epoch: int, iteration: int, rank: int, world_size: int) -> list[SliceRef]:
        """Rank ``rank``'s contiguous share of the global batch (the global size divides by ``world_size``)."""
        share = self.global_batch_size // world_size
        return self.global_batch(epoch, iteration)[rank * share:(rank + 1) * share]
