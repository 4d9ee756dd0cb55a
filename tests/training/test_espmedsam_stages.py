"""ESP-MedSAM's two stages from one `samdg_train` call (stage `auto`): the distillation stage runs first when the fold
has no distilled encoder for this plan, is reused when it has one, and `--c` continues whichever stage was
interrupted; `--stage` still trains one stage alone. The distillation stage caches the teacher's embeddings in the
embedding cache."""

from __future__ import annotations

import json

import pytest

from samdg.cli.train import main as train_main
from samdg.planning.plans import Plans
from samdg.training import train
from samdg.training.checkpoint import load_checkpoint

COMMON = ["--device", "cpu", "--batch-size", "2", "--num-workers", "0", "--no-pbar", "--no-final-validation",
          "--override", "training.augmentation=none"]


class Interrupt(Exception):
    """Stands for a killed run: raised after an epoch's checkpoint is written."""


def fold_dir_of(samdg_roots, dataset: str):
    return samdg_roots["results"] / dataset / "espmedsam__samdgPlans__2d" / "fold_0"


@pytest.fixture
def quick(quick_args):
    def make(epochs: int = 1, **changes):
        return quick_args(method="espmedsam", epochs=epochs, iters_per_epoch=2, final_validation=False, **changes)
    return make


def interrupt_in(stage: str):
    def hook(trainer, epoch):
        if trainer.run.stage == stage and epoch == 0:
            raise Interrupt
    return hook


def test_one_call_distills_first_then_segments_and_a_second_call_reuses_the_distilled_encoder(
        synthetic_dataset, samdg_roots):
    assert train_main([synthetic_dataset, "espmedsam", "0", "--epochs", "1", "--iters-per-epoch", "1",
                       *COMMON]) == 0
    fold_dir = fold_dir_of(samdg_roots, synthetic_dataset)
    distill_dir = fold_dir / "distill"
    assert load_checkpoint(distill_dir / "checkpoint_final.pth")["method_settings"]["stage"] == "distill"
    assert Plans.load(distill_dir / "plans.json").methods["espmedsam"]["stage"] == "distill"
    assert load_checkpoint(fold_dir / "checkpoint_final.pth")["method_settings"]["stage"] == "segment"
    assert load_checkpoint(fold_dir / "teacher" / "checkpoint_final.pth")["method_settings"]["stage"] == "teacher"
    distill_log = (distill_dir / "training_log.txt").read_text()
    assert "stage distill (2 of 3): no finished model of this stage" in distill_log
    assert "imitates the medical teacher" in distill_log and "the common-knowledge term is a no-op" in distill_log
    assert "start from the distillation stage" in (fold_dir / "training_log.txt").read_text()

    distilled = (distill_dir / "checkpoint_final.pth").stat().st_mtime_ns
    assert train_main([synthetic_dataset, "espmedsam", "0", "--epochs", "1", "--iters-per-epoch", "1",
                       *COMMON]) == 0
    assert (distill_dir / "checkpoint_final.pth").stat().st_mtime_ns == distilled
    assert "stage distill (2 of 3): reusing the finished model" in (fold_dir / "training_log.txt").read_text()

    # Another plan for the distillation stage: the distilled encoder is not this plan's, so it is trained again.
    assert train_main([synthetic_dataset, "espmedsam", "0", "--epochs", "1", "--iters-per-epoch", "1", *COMMON,
                       "--override", "methods.espmedsam.distill_lr=0.001"]) == 0
    assert (distill_dir / "checkpoint_final.pth").stat().st_mtime_ns != distilled
    assert "methods.espmedsam.distill_lr=0.0005 (asked 0.001)" in (distill_dir / "training_log.txt").read_text()


def test_an_interrupted_call_continues_the_stage_it_was_in(synthetic_dataset, samdg_roots, quick):
    fold_dir = fold_dir_of(samdg_roots, synthetic_dataset)
    with pytest.raises(Interrupt):
        train(quick(epochs=2), epoch_end_hooks=[interrupt_in("distill")])
    assert (fold_dir / "distill" / "checkpoint_latest.pth").is_file()
    assert not (fold_dir / "checkpoint_latest.pth").is_file()

    with pytest.raises(Interrupt):  # continues the distillation, finishes it, then stops in the segmentation
        train(quick(epochs=2, continue_training=True), epoch_end_hooks=[interrupt_in("segment")])
    assert "continuing from checkpoint_latest.pth after epoch 1" in (fold_dir / "distill" / "training_log.txt"
                                                                      ).read_text()
    assert (fold_dir / "distill" / "checkpoint_final.pth").is_file()
    assert load_checkpoint(fold_dir / "checkpoint_latest.pth")["epoch"] == 1

    train(quick(epochs=2, continue_training=True))
    log = (fold_dir / "training_log.txt").read_text()
    assert "stage distill (2 of 3): reusing the finished model" in log
    assert "continuing from checkpoint_latest.pth after epoch 1" in log
    epochs = [json.loads(line)["epoch"] for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]

    # The distilled encoder is gone: --c distils again, and the finished segmentation, built on the old one, is
    # trained afresh rather than continued.
    (fold_dir / "distill" / "checkpoint_final.pth").unlink()
    train(quick(epochs=2, continue_training=True))
    log = (fold_dir / "training_log.txt").read_text()
    assert "stage segment (3 of 3): an earlier stage was trained in this call, so this one starts afresh" in log
    assert "training had already finished" not in log.split("starts afresh")[-1]


def test_stage_option_trains_one_stage_alone(synthetic_dataset, samdg_roots):
    assert train_main([synthetic_dataset, "espmedsam", "0", "--stage", "segment", "--epochs", "1",
                       "--iters-per-epoch", "1", *COMMON]) == 0
    fold_dir = fold_dir_of(samdg_roots, synthetic_dataset)
    assert not (fold_dir / "distill").exists()
    assert "no distilled controllers" in (fold_dir / "training_log.txt").read_text()

    assert train_main([synthetic_dataset, "espmedsam", "0", "--stage", "teacher", "--epochs", "1",
                       "--iters-per-epoch", "1", *COMMON]) == 0
    assert load_checkpoint(fold_dir / "teacher" / "checkpoint_final.pth")["method_settings"]["stage"] == "teacher"
    assert not (fold_dir / "distill").exists()


def test_distillation_encodes_each_slice_with_the_teacher_once(synthetic_dataset, samdg_roots, quick):
    """A medical teacher of another family and size (tiny ViT for the tiny TinyViT student, one controller per
    domain), its embeddings cached: over three epochs each slice drawn meets the teacher once."""
    seen: list[tuple[int, int, int]] = []

    def count(trainer, epoch):
        if trainer.run.stage == "distill":
            seen.append((trainer.cache.misses, len(trainer.cache), trainer.cache.hits))

    overrides = {"training.augmentation": "none", "methods.espmedsam.teacher_variant": "tiny_vit_test",
                 "methods.espmedsam.controller_key": "domain"}
    train(quick(epochs=2, embedding_cache="memory", overrides=overrides), epoch_end_hooks=[count])
    misses, entries, hits = seen[-1]
    assert misses == entries and hits > 0  # one teacher pass per distinct slice; slices drawn again reuse it
    fold_dir = fold_dir_of(samdg_roots, synthetic_dataset)
    distill_log = (fold_dir / "distill" / "training_log.txt").read_text()
    assert "imitates the medical teacher (tiny_vit_test with its 2 controller(s)" in distill_log
    # Announced before it is built: one float16 embedding (256 x 16 x 16 on the tiny grid) per controller per slice.
    assert f"embedding cache (memory): embedding; {2 * 256 * 16 * 16 * 2 / 2**20:.2f} MiB per slice" in distill_log
    # The segmentation stage trains the encoder's controllers: no cache there, and no error either.
    assert "--embedding-cache memory: not in stage segment" in (fold_dir / "training_log.txt").read_text()


def test_distillation_with_the_common_knowledge_term_caches_the_plain_teacher(synthetic_dataset, samdg_roots, quick):
    """With a training aggregator the distillation adds MMDKD's common-knowledge term; its target, the medical
    teacher without controllers, is cached beside the per-controller embeddings (and announced); the validation
    distillation loss selects checkpoint_best.pth."""
    overrides = {"training.augmentation": "none", "methods.espmedsam.teacher_variant": "tiny_vit_test",
                 "methods.espmedsam.controller_key": "domain", "methods.espmedsam.train_aggregator": True,
                 "methods.espmedsam.stage": "distill"}
    train(quick(epochs=1, overrides={**overrides, "methods.espmedsam.stage": "teacher"}))
    train(quick(epochs=2, embedding_cache="memory", overrides=overrides))
    distill_dir = fold_dir_of(samdg_roots, synthetic_dataset) / "distill"
    log = (distill_dir / "training_log.txt").read_text()
    assert "imitates the medical teacher" in log
    # Per slice: 2 controllers' embeddings and the plain one, float16, 256 x 16 x 16 each.
    assert (f"embedding cache (memory): embedding, teacher_plain; {3 * 256 * 16 * 16 * 2 / 2**20:.2f} MiB per slice"
            in log)
    epochs = [json.loads(line) for line in (distill_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(epoch["train_common_mse"] > 0 for epoch in epochs)
    assert "new best validation loss" in log


def test_the_fold_model_of_stage_auto_is_the_segmentation_stage_model(synthetic_dataset):
    """What a reuse check (samdg_benchmark) compares: `auto` ends in the segmentation stage's model."""
    from samdg.planning.plans import apply_overrides
    from samdg.training.config import model_defining_plan, plan_differences, plans_for_method

    planned = plans_for_method(synthetic_dataset, "espmedsam", {})
    assert planned.methods["espmedsam"]["stage"] == "auto"

    def defining(stage):
        return model_defining_plan(apply_overrides(planned, {"methods.espmedsam.stage": stage}), "espmedsam")

    assert plan_differences(defining("segment"), defining("auto")) == []
    assert plan_differences(defining("distill"), defining("auto")) == [
        'methods.espmedsam.stage="distill" (asked "segment")']
