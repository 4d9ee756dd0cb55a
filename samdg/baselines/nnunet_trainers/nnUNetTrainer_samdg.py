"""``nnUNetTrainer_samdg``: nnU-Net's default trainer with the training length samdg asks for.

nnU-Net fixes 1000 epochs of 250 iterations (and 50 validation iterations) in its trainer's constructor, and
rebuilds trainers from their constructor arguments, so the length cannot be an argument. samdg passes it through
the environment of the nnU-Net process it starts (unset = nnU-Net's default):

- ``SAMDG_NNUNET_EPOCHS``: epochs;
- ``SAMDG_NNUNET_ITERS_PER_EPOCH``: training iterations per epoch; the validation iterations per epoch become a
  fifth of it (at least 1, at most nnU-Net's 50) unless ``SAMDG_NNUNET_VAL_ITERS_PER_EPOCH`` says otherwise.

Everything else (network, loss, augmentation, schedule shape) is nnU-Net's own.
"""

from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

EPOCHS_VARIABLE = "SAMDG_NNUNET_EPOCHS"
ITERATIONS_VARIABLE = "SAMDG_NNUNET_ITERS_PER_EPOCH"
VALIDATION_ITERATIONS_VARIABLE = "SAMDG_NNUNET_VAL_ITERS_PER_EPOCH"


def _positive_from_environment(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"{name}={text}: must be at least 1")
    return value


class nnUNetTrainer_samdg(nnUNetTrainer):  # noqa: N801 - nnU-Net finds trainers by this naming scheme
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        epochs = _positive_from_environment(EPOCHS_VARIABLE)
        iterations = _positive_from_environment(ITERATIONS_VARIABLE)
        validation_iterations = _positive_from_environment(VALIDATION_ITERATIONS_VARIABLE)
        if epochs is not None:
            self.num_epochs = epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = min(self.num_val_iterations_per_epoch, max(1, iterations // 5))
        if validation_iterations is not None:
            self.num_val_iterations_per_epoch = validation_iterations
