"""ESP-MedSAM through the public commands on the tiny synthetic dataset: the segmentation stage with one controller
per domain (samdg_train, then samdg_predict), and the distillation stage (--stage distill) whose loss goes down."""

from __future__ import annotations

import json
import math

import torch

from samdg.cli import predict
from samdg.cli.train import main as train_main
from samdg.labels import LabelSpec
from samdg.paths import raw_dataset_dir
from samdg.training.checkpoint import build_untrained, load_checkpoint, load_trained_method

COMMON = ["--device", "cpu", "--batch-size", "2", "--num-workers", "0", "--no-pbar",
          "--override", "training.augmentation=none"]


def fold_dir_of(samdg_roots, dataset: str):
    return samdg_roots["results"] / dataset / "espmedsam__samdgPlans__2d" / "fold_0"


def test_segment_stage_trains_a_controller_per_domain_and_predicts(synthetic_dataset, samdg_roots, tmp_path):
    code = train_main([synthetic_dataset, "espmedsam", "0", "--stage", "segment", "--epochs", "1",
                       "--iters-per-epoch", "2", *COMMON, "--override", "methods.espmedsam.controller_key=domain",
                       "--no-final-validation"])
    assert code == 0
    fold_dir = fold_dir_of(samdg_roots, synthetic_dataset)
    state = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert state["method_settings"]["controllers"] == ["siteA", "siteB"]  # filled from the training domains
    metrics = json.loads((fold_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_dice_loss", "train_bce", "train_sppg_bce"} <= set(metrics)

    method, _, _ = load_trained_method(fold_dir)
    assert method.num_controllers == 2 and method.decoder.num_groups == 2

    output = tmp_path / "predicted"
    images = raw_dataset_dir(synthetic_dataset) / "imagesTr"
    assert predict.main(["-i", str(images), "-o", str(output), "-d", synthetic_dataset, "-m", "espmedsam",
                         "-f", "0", "--device", "cpu", "--disable-progress-bar"]) == 0
    cases = {path.name.split("_0000")[0] for path in images.iterdir()}
    assert {path.name.split(".")[0] for path in output.glob("*.nii.gz")} == cases


def test_distill_stage_loss_goes_down_and_the_segment_stage_starts_from_it(synthetic_dataset, samdg_roots):
    torch.manual_seed(0)
    code = train_main([synthetic_dataset, "espmedsam", "0", "--stage", "distill", "--epochs", "4",
                       "--iters-per-epoch", "3", *COMMON, "--no-final-validation"])
    assert code == 0
    distill_dir = fold_dir_of(samdg_roots, synthetic_dataset) / "distill"
    epochs = [json.loads(line) for line in (distill_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [epoch["train_distill_mse"] for epoch in epochs]
    assert losses[-1] < 0.8 * losses[0], losses
    state = load_checkpoint(distill_dir / "checkpoint_final.pth")
    assert state["method_settings"]["stage"] == "distill"
    assert not any(key.startswith("teacher") for key in state["model_state"])
    assert state["scheduler_state"]["last_epoch"] == 4  # ExponentialLR stepped once per epoch
    # checkpoint_best.pth is the epoch with the lowest validation distillation loss (not the best Dice).
    val_losses = [epoch["val_loss"] for epoch in epochs]
    best = load_checkpoint(distill_dir / "checkpoint_best.pth")
    assert best["epoch"] == 1 + val_losses.index(min(val_losses))
    assert best["best_val_loss"] == min(val_losses)

    # The segmentation stage of the same fold starts from the distillation's best controllers.
    distilled, _, _ = load_trained_method(distill_dir, "checkpoint_best.pth")
    segment = build_untrained("espmedsam", state["variant"], state["input_size"],
                              {**state["method_settings"], "stage": "segment"}, distilled.label_spec)
    lines = segment.before_training(fold_dir_of(samdg_roots, synthetic_dataset))
    assert "distillation stage" in lines[0] and "lowest validation loss" in lines[0]
    for key, value in distilled.state_dict().items():
        if key.startswith("image_encoder."):
            assert torch.equal(segment.state_dict()[key], value), key
    assert train_main([synthetic_dataset, "espmedsam", "0", "--stage", "segment", "--epochs", "1",
                       "--iters-per-epoch", "1", *COMMON, "--no-final-validation"]) == 0
    log = (fold_dir_of(samdg_roots, synthetic_dataset) / "training_log.txt").read_text()
    assert "start from the distillation stage" in log


def test_the_segment_stage_takes_the_distillations_best_checkpoint_only_when_selected_by_the_loss(tmp_path):
    """checkpoint_best.pth with a finite best_val_loss is the distillation's lowest validation loss; one without
    (a distillation from before the loss selection, best by the untrained decoder's Dice) is passed over."""
    torch.manual_seed(0)
    settings = {"stage": "distill", "controllers": ["CT"]}
    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1})
    final = build_untrained("espmedsam", "tiny_tinyvit_test", 64, settings, spec)
    best = build_untrained("espmedsam", "tiny_tinyvit_test", 64, settings, spec)
    with torch.no_grad():
        for parameter in best.controller_modules[0].parameters():
            parameter.add_(1.0)  # the two checkpoints' controllers differ
    folder = tmp_path / "distill"
    folder.mkdir()
    torch.save({"method_settings": settings, "model_state": final.state_dict(), "epoch": 4},
               folder / "checkpoint_final.pth")

    def segment_start(best_val_loss: float) -> tuple[torch.nn.Module, str]:
        torch.save({"method_settings": settings, "model_state": best.state_dict(), "epoch": 2,
                    "best_val_loss": best_val_loss}, folder / "checkpoint_best.pth")
        segment = build_untrained("espmedsam", "tiny_tinyvit_test", 64, {**settings, "stage": "segment"}, spec)
        return segment, segment.before_training(tmp_path)[0]

    key = next(k for k in best.state_dict() if k.startswith("image_encoder.") and "kv_prompt" in k)
    segment, line = segment_start(0.25)
    assert "checkpoint_best.pth: lowest validation loss 0.25, epoch 2" in line
    assert torch.equal(segment.state_dict()[key], best.state_dict()[key])
    segment, line = segment_start(math.inf)
    assert "checkpoint_final.pth: final" in line
    assert torch.equal(segment.state_dict()[key], final.state_dict()[key])
