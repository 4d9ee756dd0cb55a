"""A method brings its own optimiser (``configure_optimizers``) and a frozen teacher, and the real Trainer trains it.

The method is defined here, as ESP-MedSAM's distillation stage needs: Adam with two parameter groups, ExponentialLR
0.98 stepped per epoch, and a frozen teacher whose outputs the loss imitates. Nothing in ``samdg/training`` knows
about it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from samdg.models.layers.sam_decoding import decode_masks, no_prompt
from samdg.models.methods import OptimizerSetup, register_method, registry
from samdg.models.methods.sam import SamBaseline, SamBaselineSettings
from samdg.training import train
from samdg.training.checkpoint import load_checkpoint
from samdg.utils.schema import doc_field

GAMMA = 0.98


@dataclass
class DistilledSettings(SamBaselineSettings):
    """test method: sam + distillation from a frozen teacher decoder"""

    distill_weight: float = doc_field("weight of the MSE to the teacher's logits", default=1.0, minimum=0)


class DistilledSam(SamBaseline):
    """``sam`` whose loss adds the MSE to a frozen copy of its initial decoder (the teacher)."""

    def __init__(self, sam, settings, label_spec) -> None:
        super().__init__(sam, settings, label_spec)
        self.teachers = {"decoder": copy.deepcopy(self.mask_decoder)}  # a plain dict: not a sub-module
        self.teacher_at_start = copy.deepcopy(self.teachers["decoder"].state_dict())
        self.seen_teacher_modes: list[bool] = []

    def teacher_modules(self):
        return self.teachers

    def loss(self, outputs, batch):
        total, parts = super().loss(outputs, batch)
        teacher = self.teachers["decoder"]
        self.seen_teacher_modes.append(teacher.training)
        with torch.no_grad():
            sparse, dense = no_prompt(self.prompt_encoder)
            embedding = self.features(batch)["embedding"]
            target, _ = decode_masks(teacher, embedding, self.prompt_encoder.get_dense_pe(), sparse, dense)
        distill = torch.nn.functional.mse_loss(outputs["logits"], target)
        parts["distill"] = float(distill.detach())
        return total + self.settings.distill_weight * distill, parts

    def configure_optimizers(self, total_steps: int) -> OptimizerSetup:
        tokens = [self.mask_decoder.mask_tokens, self.mask_decoder.output_hypernetworks_mlps]
        token_ids = {id(p) for module in tokens for p in module.parameters()}
        rest = [p for p in self.trainable_parameters() if id(p) not in token_ids]
        optimizer = torch.optim.Adam([{"params": [p for m in tokens for p in m.parameters()]},
                                      {"params": rest, "lr": self.settings.lr / 10}], lr=self.settings.lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=GAMMA)
        return OptimizerSetup(optimizer, scheduler, interval="epoch", grad_clip=None)


@pytest.fixture
def distilled_method(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    register_method("distilled_sam", settings=DistilledSettings)(DistilledSam)
    trainers = []
    return trainers, lambda trainer, epoch: trainers.append(trainer)


def test_own_optimizer_groups_epoch_schedule_and_a_frozen_teacher(synthetic_dataset, quick_args, distilled_method):
    trainers, hook = distilled_method
    lr = 1e-3
    overrides = {"training.augmentation": "none", "methods.distilled_sam.lr": lr}
    fold_dir = train(quick_args(method="distilled_sam", epochs=1, iters_per_epoch=2, overrides=overrides,
                                final_validation=False), epoch_end_hooks=[hook])
    method = trainers[-1].method
    teacher = method.teachers["decoder"]
    assert method.seen_teacher_modes and not any(method.seen_teacher_modes)  # eval while the student trained
    assert not any(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, method.teacher_at_start[key]), f"teacher weight {key} changed"
    assert not torch.equal(method.mask_decoder.mask_tokens.weight, method.teacher_at_start["mask_tokens.weight"])

    state = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert set(state["model_state"]) == set(method.state_dict())  # the teacher is not saved with the method
    groups = state["optimizer_state"]["param_groups"]
    assert len(groups) == 2 and [g["lr"] for g in groups] == pytest.approx([lr * GAMMA, lr / 10 * GAMMA])
    assert state["scheduler_state"]["last_epoch"] == 1  # stepped once per epoch, not per iteration

    # --c restores the optimiser and the schedule: one more epoch continues the decay (a fresh scheduler would
    # restart at lr).
    train(quick_args(method="distilled_sam", epochs=2, iters_per_epoch=2, overrides=overrides, final_validation=False,
                     continue_training=True), epoch_end_hooks=[hook])
    state = load_checkpoint(fold_dir / "checkpoint_final.pth")
    groups = state["optimizer_state"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([lr * GAMMA**2, lr / 10 * GAMMA**2])
    assert "exp_avg" in next(iter(state["optimizer_state"]["state"].values()))  # Adam moments kept


def test_an_optimizer_that_misses_a_trainable_parameter_is_refused(distilled_method):
    from samdg.labels import LabelSpec
    from samdg.models.backbones import build_sam
    from samdg.models.methods import build_method
    from samdg.training.optim import configure_optimization

    method = build_method("distilled_sam", build_sam("tiny_tinyvit_test", pretrained=False), None,
                          LabelSpec.from_dataset_json({"background": 0, "a": 1}))
    method.configure_optimizers = lambda total_steps: OptimizerSetup(
        torch.optim.Adam(method.mask_decoder.mask_tokens.parameters()),
        torch.optim.lr_scheduler.ExponentialLR(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), GAMMA))
    with pytest.raises(ValueError, match="must update each of the .* trainable parameters exactly once"):
        configure_optimization(method, 10)
