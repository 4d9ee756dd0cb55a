"""Slice sampling (foreground oversampling, determinism, rank shares), batches, augmentation and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdg.errors import SamdgError
from samdg.training.augmentation import build_augmentation, seeded_global_rng
from samdg.training.config import resolve_run
from samdg.training.embedding_cache import EmbeddingCache
from samdg.training.loader import SliceBatches, crop_window, make_loader
from samdg.training.sampler import SliceSampler


@pytest.fixture
def run(synthetic_dataset, quick_args):
    return resolve_run(quick_args(fold="all"), "cpu")


def test_foreground_oversampling_positions_and_determinism(run):
    sampler = SliceSampler(run.cases, run.train_cases, 6, 0.33, seed=3)
    assert sampler.first_forced == 4  # round(6 * 0.67): the last two of six are forced
    for iteration in range(20):
        refs = sampler.global_batch(epoch=1, iteration=iteration)
        assert [r.force_foreground for r in refs] == [False] * 4 + [True] * 2
        for ref in refs[4:]:
            assert (np.asarray(run.cases[ref.case_id].seg()[0, ref.slice_index]) > 0).any()
    assert sampler.global_batch(1, 5) == SliceSampler(run.cases, run.train_cases, 6, 0.33, seed=3).global_batch(1, 5)
    assert sampler.global_batch(1, 5) != sampler.global_batch(2, 5)
    assert sampler.global_batch(1, 5) != SliceSampler(run.cases, run.train_cases, 6, 0.33, seed=4).global_batch(1, 5)


def test_rank_shares_concatenate_to_the_global_batch(run):
    sampler = SliceSampler(run.cases, run.train_cases, 4, 0.5, seed=0)
    shares = [sampler.rank_batch(0, 7, rank, 2) for rank in range(2)]
    assert shares[0] + shares[1] == sampler.global_batch(0, 7)
    batches = [SliceBatches(run.cases, sampler, run.plans.channel_mapping, 64, "default", None, rank, 2)
               for rank in range(2)]
    single = SliceBatches(run.cases, sampler, run.plans.channel_mapping, 64, "default", None, 0, 1)[(0, 7)]
    both = [b[(0, 7)] for b in batches]
    assert torch.equal(torch.cat([b["image"] for b in both]), single["image"])  # augmentation included
    assert torch.equal(torch.cat([b["target"] for b in both]), single["target"])


def test_batches_have_the_contract_shapes_and_ranges(run):
    sampler = SliceSampler(run.cases, run.train_cases, 3, 0.33, seed=1)
    batches = SliceBatches(run.cases, sampler, run.plans.channel_mapping, 64, "dg_strong")
    batch = batches[(0, 0)]
    assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert batch["target"].shape == (3, 64, 64) and batch["target"].dtype == torch.int64
    assert set(torch.unique(batch["target"]).tolist()) <= {0, 1, 2, 3}
    assert batch["domain"] == [run.cases[k.split(":")[0]].domain for k in batch["keys"]]
    # Replicate mapping: the three SAM channels are one grey channel (kept identical by the intensity transforms).
    unaugmented = SliceBatches(run.cases, sampler, run.plans.channel_mapping, 64, "none")[(0, 0)]
    assert torch.equal(unaugmented["image"][:, 0], unaugmented["image"][:, 1])
    # Same index, same batch (workers and resumed runs depend on it).
    again = batches[(0, 0)]
    assert torch.equal(again["image"], batch["image"]) and torch.equal(again["target"], batch["target"])


def test_loader_workers_give_the_same_batches_as_the_main_process(run):
    sampler = SliceSampler(run.cases, run.train_cases, 2, 0.33, seed=5)
    batches = SliceBatches(run.cases, sampler, run.plans.channel_mapping, 64, "default")
    serial, indices = make_loader(batches, 3, 0, False)
    parallel, parallel_indices = make_loader(batches, 3, 2, False)
    indices.set_epoch(4)
    parallel_indices.set_epoch(4)
    for a, b in zip(serial, parallel):
        assert torch.equal(a["image"], b["image"]) and a["keys"] == b["keys"]
    del parallel


def test_augmentation_is_seeded_per_sample_and_keeps_labels_aligned():
    augment = build_augmentation("default", 32)
    image = np.zeros((3, 32, 32), np.float32)
    image[:, 8:20, 10:24] = 0.8
    label = (image[0] > 0.5).astype(np.int16) * 2
    outputs = []
    for seed in (11, 11, 12, 13, 14, 15):
        with seeded_global_rng(seed):
            outputs.append(augment(image, label))
    assert np.array_equal(outputs[0][0], outputs[1][0])
    assert any(not np.array_equal(outputs[0][0], o[0]) for o in outputs[2:])
    for out_image, out_label in outputs:
        assert set(np.unique(out_label)) <= {0, 2}
        assert out_image.min() >= 0 and out_image.max() <= 1
    state = np.random.get_state()[1].copy()
    with seeded_global_rng(1):
        augment(image, label)
    assert np.array_equal(np.random.get_state()[1], state)  # the caller's generator is left alone
    with pytest.raises(SamdgError, match="unknown; choose one of default, dg_strong, none"):
        build_augmentation("heavy", 32)


def test_crop_window_stays_inside_and_centres_on_request():
    rng = np.random.default_rng(0)
    rows, cols = crop_window((50, 40), (20, 60), rng)
    assert rows.stop - rows.start == 20 and (cols.start, cols.stop) == (0, 40)
    rows, cols = crop_window((50, 40), (20, 10), rng, centre=(49, 0))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (30, 50, 0, 10)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_embedding_cache_encodes_each_slice_once(mode, tmp_path):
    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return {"embedding": images.mean(dim=1, keepdim=True) * 2, "block1": images[:, :1] + 1}

    cache = EmbeddingCache(mode, ("block1",), tmp_path / "cache" if mode == "disk" else None)
    images = torch.rand(3, 3, 8, 8)
    first = cache.features(["c:0", "c:1", "d:0"], images, encode)
    assert calls == [3]
    second = cache.features(["d:0", "c:0"], images[[2, 0]], encode)
    assert calls == [3] and cache.hits == 2 and cache.misses == 3
    assert set(second) == {"embedding", "block1"}
    torch.testing.assert_close(second["embedding"], first["embedding"][[2, 0]])
    torch.testing.assert_close(first["embedding"], encode(images)["embedding"], atol=2e-3, rtol=2e-3)  # float16
    assert len(cache) == 3
