"""``--c``: 2 epochs, a kill, a resume and 2 more epochs end exactly where 4 uninterrupted epochs end."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from samdg.errors import SamdgError
from samdg.models.methods.sam import SamBaseline
from samdg.training import train
from samdg.training.checkpoint import load_checkpoint

TIMING_KEYS = {"epoch_seconds", "slices_per_second"}


class Killed(Exception):
    pass


def _kill_after_second_epoch(trainer, epoch):
    if epoch == 1:
        raise Killed


@pytest.fixture
def random_forward(monkeypatch):
    """Make the method draw from torch's, numpy's and Python's generators, as prompt-sampling methods do, so
    that a resume that failed to restore any generator would change the weights."""
    forward = SamBaseline.forward

    def noisy_forward(self, batch):
        outputs = forward(self, batch)
        jitter = 0.01 * (torch.rand(()) + float(np.random.rand()) + random.random())
        return {"logits": outputs["logits"] * (1 + jitter)}

    monkeypatch.setattr(SamBaseline, "forward", noisy_forward)


def _records(fold_dir):
    lines = (fold_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def test_resumed_run_matches_uninterrupted_run(synthetic_dataset, quick_args, random_forward):
    args = quick_args(epochs=4, iters_per_epoch=2, final_validation=False,
                      overrides={"training.augmentation": "default", "methods.sam.lr": 1e-3})
    straight_dir = train(args)
    reference = straight_dir.parent / "straight"
    shutil.move(straight_dir, reference)

    with pytest.raises(Killed):
        train(args, epoch_end_hooks=[_kill_after_second_epoch])
    interrupted = load_checkpoint(straight_dir / "checkpoint_latest.pth")
    assert interrupted["epoch"] == 2 and not (straight_dir / "checkpoint_final.pth").exists()

    args.continue_training = True
    resumed_dir = train(args)
    straight = load_checkpoint(reference / "checkpoint_final.pth")
    resumed = load_checkpoint(resumed_dir / "checkpoint_final.pth")
    assert resumed["epoch"] == straight["epoch"] == 4
    for name, tensor in straight["model_state"].items():
        assert torch.equal(tensor, resumed["model_state"][name]), name
    assert resumed["scheduler_state"]["last_epoch"] == straight["scheduler_state"]["last_epoch"] == 8
    assert _records(resumed_dir) == _records(reference)
    log = (resumed_dir / "training_log.txt").read_text()
    assert log.count("epoch 2/4:") == 1 and "continuing from checkpoint_latest.pth after epoch 2" in log

    trained_overrides = dict(args.overrides)
    args.overrides = {**trained_overrides, "methods.sam.lr": 2e-3}
    with pytest.raises(SamdgError, match=r"cannot continue, the run there was trained with methods\.sam\.lr=0\.001"):
        train(args)
    # a plan-level change (not a method setting) is refused too, and the fold's plans.json is left as it was
    plans_before = (resumed_dir / "plans.json").read_bytes()
    args.overrides = {**trained_overrides, "training.augmentation": "dg_strong"}
    with pytest.raises(SamdgError, match='training.augmentation="default" \\(asked "dg_strong"\\)'):
        train(args)
    assert (resumed_dir / "plans.json").read_bytes() == plans_before


def test_a_checkpoint_written_before_a_setting_existed_continues_and_predicts(synthetic_dataset, quick_args):
    from samdg.training import load_trained_method
    from samdg.training.checkpoint import save_checkpoint

    args = quick_args(epochs=1, iters_per_epoch=1, final_validation=False)
    fold_dir = train(args)
    path = fold_dir / "checkpoint_final.pth"
    state = load_checkpoint(path)
    for key in ("bce_weight", "betas", "input_size_by_family"):  # settings added after this checkpoint was written
        del state["method_settings"][key]
    save_checkpoint(path, state)
    method, _, _ = load_trained_method(fold_dir)
    assert method.settings.bce_weight == 1.0 and method.settings.betas == [0.9, 0.999]
    args.continue_training, args.epochs = True, 2
    train(args)  # the defaults fill the missing keys: no "the checkpoint differs" refusal
    assert load_checkpoint(path)["epoch"] == 2
