"""ESP-MedSAM through the public commands on the tiny synthetic dataset: the segmentation stage with one controller
per domain (samdg_train, then samdg_predict), and the distillation stage (--stage distill) whose loss goes down."""

from __future__ import annotations

import json

import torch

from samdg.cli import predict
from samdg.cli.train import main as train_main
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

    # The segmentation stage of the same fold starts from the distilled controllers.
    distilled, _, _ = load_trained_method(distill_dir)
    segment = build_untrained("espmedsam", state["variant"], state["input_size"],
                              {**state["method_settings"], "stage": "segment"}, distilled.label_spec)
    lines = segment.before_training(fold_dir_of(samdg_roots, synthetic_dataset))
    assert "distillation stage" in lines[0]
    for key, value in distilled.state_dict().items():
        if key.startswith("image_encoder."):
            assert torch.equal(segment.state_dict()[key], value), key
    assert train_main([synthetic_dataset, "espmedsam", "0", "--stage", "segment", "--epochs", "1",
                       "--iters-per-epoch", "1", *COMMON, "--no-final-validation"]) == 0
    log = (fold_dir_of(samdg_roots, synthetic_dataset) / "training_log.txt").read_text()
    assert "start from the distillation stage" in log
