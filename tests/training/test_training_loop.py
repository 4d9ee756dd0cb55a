"""The loop end to end on the tiny TinyViT: learning, the results folder, checkpoints, rebuilding for prediction."""

from __future__ import annotations

import json

import numpy as np
import torch

from samdg.planning.plans import Plans
from samdg.training import load_trained_method, train
from samdg.training.checkpoint import load_checkpoint
from samdg.training.config import resolve_run
from samdg.training.distributed import DistributedContext
from samdg.training.trainer import Trainer


def test_loss_decreases_on_a_fixed_batch(synthetic_dataset, quick_args):
    overrides = {"training.augmentation": "none", "methods.sam.lr": 1e-3, "methods.sam.warmup_fraction": 0.0}
    run = resolve_run(quick_args(fold="all", epochs=1, iters_per_epoch=12, overrides=overrides), "cpu")
    trainer = Trainer(run, DistributedContext(), None)
    batch = trainer.train_loader.dataset[(0, 0)]
    assert bool((batch["target"] > 0).any())
    losses = [trainer.train_step(batch)["loss"] for _ in range(12)]
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3])
    assert losses[-1] < losses[0]


def test_training_run_writes_a_self_contained_results_folder(synthetic_dataset, quick_args):
    args = quick_args(epochs=2, iters_per_epoch=3, source_domains=["siteA"],
                      overrides={"training.augmentation": "none", "methods.sam.lr": 5e-4})
    fold_dir = train(args)
    assert fold_dir.name == "fold_0__src-siteA" and fold_dir.parent.name == "sam__samdgPlans__2d"
    names = {p.name for p in fold_dir.iterdir()}
    assert {"checkpoint_final.pth", "checkpoint_best.pth", "plans.json", "dataset.json", "training_args.json",
            "training_log.txt", "metrics.jsonl", "progress.png", "validation"} <= names
    assert "checkpoint_latest.pth" not in names  # superseded by the final checkpoint

    plans = Plans.load(fold_dir / "plans.json")
    assert plans.training.augmentation == "none" and plans.methods["sam"]["lr"] == 5e-4
    assert plans.decision("methods.sam.lr").reason.startswith("set by the user")
    assert json.loads((fold_dir / "dataset.json").read_text())["labels"]["liver"] == 1

    records = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]["val_dice"]) == {"liver", "kidney", "spleen"}
    assert {"train_loss", "train_dice_loss", "train_bce", "lr", "ema_dice", "slices_per_second"} <= set(records[0])
    assert records[0]["train_loss"] > records[-1]["train_loss"]
    log = (fold_dir / "training_log.txt").read_text()
    assert "trainable parameters: " in log and "source domains siteA" in log and "whole-volume validation" in log

    state = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert state["method"] == "sam" and state["variant"] == "tiny_tinyvit_test" and state["input_size"] == 64
    assert state["epoch"] == 2 and state["method_settings"]["lr"] == 5e-4
    assert state["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
    assert {"optimizer_state", "scheduler_state", "scaler_state", "rng_states", "log"} <= set(state)

    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    train_args = json.loads((fold_dir / "training_args.json").read_text())
    assert sorted(summary["cases"]) == train_args["val_cases"]
    assert all(summary["cases"][c]["domain"] == "siteA" for c in summary["cases"])

    # The folder alone rebuilds the model: same predictions as the trained weights in the checkpoint.
    method, loaded_plans, label_spec = load_trained_method(fold_dir)
    assert not method.training and label_spec.names == ("liver", "kidney", "spleen")
    assert loaded_plans.sam.variant == "tiny_tinyvit_test"
    reference = Trainer(resolve_run(args, "cpu"), DistributedContext(), None).method
    reference.load_state_dict(state["model_state"])
    reference.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(method.predict(images), reference.predict(images))


def test_embedding_cache_run_encodes_each_slice_once(synthetic_dataset, quick_args):
    run = resolve_run(quick_args(fold="all", embedding_cache="memory", epochs=1, iters_per_epoch=4), "cpu")
    trainer = Trainer(run, DistributedContext(), None)
    encoded = []
    original = trainer.method.encode
    trainer.method.encode = lambda images: encoded.append(images.shape[0]) or original(images)
    trainer.train_epoch(0)
    first = trainer.validate_epoch()
    assert trainer.validate_epoch() == first  # the second pass is served from the cache
    distinct = {key for i in range(4) for key in trainer.train_loader.dataset[(0, i)]["keys"]}
    distinct |= {key for i in range(run.val_iterations) for key in trainer.val_loader.dataset[(0, i)]["keys"]}
    assert sum(encoded) == len(distinct) == trainer.cache.misses
    assert trainer.cache.hits == 4 * 2 + 2 * 2 * run.val_iterations - len(distinct)
