"""The augmented embedding cache: K augmented views per training slice, each with its own augmented label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdg.training.config import resolve_run
from samdg.training.distributed import DistributedContext
from samdg.training.embedding_cache import AugmentedViewCache
from samdg.training.trainer import Trainer

FLIPS = {"none": lambda a: a, "rows": lambda a: a[..., ::-1, :], "cols": lambda a: a[..., ::-1],
         "both": lambda a: a[..., ::-1, ::-1]}


def _trainer(quick_args, mode="memory", preset="default", views=4, seed=12345, refresh=0, **changes) -> Trainer:
    overrides = {"training.augmentation": preset, "training.embedding_cache_views": views,
                 "training.embedding_cache_refresh_epochs": refresh}
    args = quick_args(fold="all", embedding_cache=mode, overrides=overrides, seed=seed, **changes)
    return Trainer(resolve_run(args, "cpu"), DistributedContext(), None)


def test_size_is_announced_before_the_views_are_built(synthetic_dataset, quick_args, capsys):
    trainer = _trainer(quick_args, views=4, refresh=1, epochs=3)
    log = capsys.readouterr().out
    train_slices = sum(trainer.run.cases[c].num_slices for c in trainer.run.train_cases)
    assert f"augmented (default): 4 views of each of {train_slices} training slices" in log
    assert "drawn anew every 1 epochs (1 round(s) kept)" in log and "GiB of RAM of each training process" in log
    assert len(trainer.train_cache) == 0  # announced, not built yet

    _trainer(quick_args, mode="disk", views=4, refresh=1, epochs=3)
    log = capsys.readouterr().out
    assert "(3 round(s) kept)" in log and "GiB of disk" in log  # disk keeps every round of the run


def test_disk_key_changes_with_preset_views_and_seed_only(synthetic_dataset, quick_args):
    base = _trainer(quick_args, mode="disk")
    assert isinstance(base.train_cache, AugmentedViewCache)
    same = _trainer(quick_args, mode="disk")
    assert same.train_cache.folder == base.train_cache.folder
    for changed in (_trainer(quick_args, mode="disk", preset="dg_gin"), _trainer(quick_args, mode="disk", views=8),
                    _trainer(quick_args, mode="disk", seed=7)):
        assert changed.train_cache.folder != base.train_cache.folder
        assert changed.cache.folder == base.cache.folder  # the un-augmented (validation) cache is shared


def test_views_differ_and_a_view_is_the_same_whenever_drawn(synthetic_dataset, quick_args):
    trainer = _trainer(quick_args, preset="dg_all", views=4)
    batches = trainer.train_loader.dataset
    ref = batches.sampler.rank_batch(0, 0, 0, 1)[0]
    seeds = {}
    for draw in range(40):  # other draws of the same slice pick views at random
        key, seed = batches.view_of(type(ref)(ref.case_id, ref.slice_index, False, ref.seed + draw), 0)
        assert seeds.setdefault(key, seed) == seed
    assert len(seeds) == 4
    images = [batches.make_sample(ref, seed)[0] for seed in seeds.values()]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(images[i], images[j])
    again = batches.make_sample(ref, next(iter(seeds.values())))[0]
    np.testing.assert_array_equal(again, images[0])


def test_training_uses_views_and_validation_stays_unaugmented(synthetic_dataset, quick_args):
    trainer = _trainer(quick_args, views=2, epochs=1, iters_per_epoch=3)
    trainer.train_epoch(0)
    trainer.validate_epoch()
    view_keys = set(trainer.train_cache._memory)
    assert view_keys and all("@r0v" in key for key in view_keys)
    assert trainer.train_cache.misses == len(view_keys)
    plain_keys = set(trainer.cache._memory)
    assert plain_keys and not any("@" in key for key in plain_keys)
    val_batch = trainer.val_loader.dataset[(0, 0)]
    ref = trainer.val_sampler.rank_batch(0, 0, 0, 1)[0]
    unaugmented = trainer.val_loader.dataset.make_sample(ref)[0]
    assert trainer.val_loader.dataset.augmentation == "none"
    np.testing.assert_array_equal(val_batch["image"][0].numpy(), unaugmented)


def test_cached_label_is_the_view_label_transformed_with_the_image(synthetic_dataset, quick_args):
    trainer = _trainer(quick_args, views=16, epochs=1)
    batches = trainer.train_loader.dataset
    ref = next(r for r in batches.sampler.rank_batch(0, 0, 0, 1) if r.force_foreground)
    plain = type(batches)(batches.cases, batches.sampler, batches.channel_mapping, batches.input_size, "none")
    plain_image, plain_label = plain.make_sample(ref)
    draws = [type(ref)(ref.case_id, ref.slice_index, False, ref.seed + d) for d in range(300)]
    views = dict(batches.view_of(draw, 0) for draw in draws)  # key -> seed of each of the 16 views
    assert len(views) == 16
    mirrored = 0
    for key, seed in views.items():
        image, label = batches.make_sample(ref, seed)
        # The trainer takes the label stored with the view, which is the one the loader made with its image.
        prepared = trainer.prepare({"image": torch.from_numpy(image[None]), "target": torch.from_numpy(label[None]),
                                    "keys": [key]}, trainer.train_cache)
        np.testing.assert_array_equal(prepared["target"][0].numpy(), label)
        flips = [name for name, flip in FLIPS.items() if np.array_equal(flip(plain_label), label)]
        if len(flips) == 1 and flips[0] != "none":  # only mirrored: the image must be mirrored the same way
            mirrored += 1
            correlation = {name: np.corrcoef(flip(plain_image)[0].ravel(), image[0].ravel())[0, 1]
                           for name, flip in FLIPS.items()}
            assert max(correlation, key=correlation.get) == flips[0], correlation
    assert mirrored >= 3
    assert len(trainer.train_cache) == 16


def test_memory_views_are_drawn_anew_each_round(synthetic_dataset, quick_args):
    trainer = _trainer(quick_args, views=2, refresh=1, epochs=2, iters_per_epoch=2)
    trainer.train_epoch(0)
    first = set(trainer.train_cache._memory)
    trainer.train_epoch(1)
    second = set(trainer.train_cache._memory)
    assert all("@r0v" in k for k in first) and second and all("@r1v" in k for k in second)


def test_random_inplane_crops_still_refuse_the_cache(synthetic_dataset, quick_args):
    from samdg.errors import SamdgError

    args = quick_args(embedding_cache="memory", overrides={"sam.inplane_crop": [16, 16]})
    with pytest.raises(SamdgError, match="needs whole slices"):
        resolve_run(args, "cpu")


def test_cross_domain_run_trains_with_the_planner_dg_preset_unless_overridden(synthetic_dataset, quick_args):
    from samdg.planning.planner import CROSS_DOMAIN_AUGMENTATION

    run = resolve_run(quick_args(source_domains=["siteA"], overrides={}), "cpu")
    assert run.augmentation == CROSS_DOMAIN_AUGMENTATION
    assert "cross-domain training run" in run.plans.decision("training.augmentation").reason
    assert resolve_run(quick_args(overrides={}), "cpu").augmentation == "default"
    overridden = resolve_run(quick_args(source_domains=["siteA"], overrides={"training.augmentation": "none"}), "cpu")
    assert overridden.augmentation == "none"
    assert overridden.plans.decision("training.augmentation").reason.startswith("set by the user (--override)")


def test_benchmark_reuses_a_cross_domain_model_trained_with_the_planner_default(synthetic_dataset, quick_args):
    from samdg.benchmark.protocols import ModelPlan
    from samdg.benchmark.runner import BenchmarkSettings, _reuse_note
    from samdg.errors import SamdgError
    from samdg.planning.planner import CROSS_DOMAIN_AUGMENTATION
    from samdg.training import train

    fold_dir = train(quick_args(fold="all", source_domains=["siteA"], overrides={}, epochs=1, iters_per_epoch=1,
                                final_validation=False))
    plan = ModelPlan("siteA", ("siteA",))
    settings = BenchmarkSettings(dataset=synthetic_dataset, method="sam", protocol="single-source")
    assert _reuse_note(fold_dir, settings, synthetic_dataset, plan) == ""  # the plan the benchmark would train
    other = "dg_strong" if CROSS_DOMAIN_AUGMENTATION != "dg_strong" else "default"
    settings.overrides = {"training.augmentation": other}
    with pytest.raises(SamdgError, match=f'training.augmentation="{CROSS_DOMAIN_AUGMENTATION}" \\(asked "{other}"\\)'):
        _reuse_note(fold_dir, settings, synthetic_dataset, plan)
