"""The trainer's side of optimisation: what a method declares becomes what the loop steps.

The method decides (``trainable_parameters``, ``teacher_modules``, ``configure_optimizers``; see
:mod:`samdg.models.methods.base`); these functions apply it, and the trainer calls nothing else:

- :func:`prepare_for_training`: ``requires_grad`` exactly on the declared trainable parameters; teachers moved to
  the device, frozen and in eval mode.
- :func:`configure_optimization`: the method's :class:`~samdg.models.methods.optimization.OptimizerSetup` for the
  whole run, checked to update exactly the declared trainable parameters.
- :func:`optimizer_step`: unscale, clip, step; the scheduler too when it runs per iteration
  (:func:`end_of_epoch` steps a per-epoch one).
"""

from __future__ import annotations

import torch
from torch import nn

from samdg.models.methods.optimization import OptimizerSetup


def prepare_for_training(method: nn.Module, device: torch.device) -> list[nn.Parameter]:
    """Freeze all but the declared trainable parameters and bring the teachers along; returns the trainable ones."""
    for teacher in method.teacher_modules().values():
        teacher.to(device).eval()
    return method.freeze_all_but_trainable()


def configure_optimization(method: nn.Module, total_steps: int) -> OptimizerSetup:
    """``method.configure_optimizers(total_steps)``; an optimiser that misses a trainable parameter or updates
    a frozen one is a programming error of the method (ValueError naming the count)."""
    setup = method.configure_optimizers(total_steps)
    optimised = [id(p) for p in setup.parameters()]
    declared = {id(p) for p in method.trainable_parameters()}
    if len(optimised) != len(set(optimised)) or set(optimised) != declared:
        raise ValueError(f"{type(method).__name__}.configure_optimizers must update each of the "
                         f"{len(declared)} trainable parameters exactly once; its optimiser holds {len(optimised)} "
                         f"({len(set(optimised) - declared)} not declared trainable)")
    return setup


def optimizer_step(setup: OptimizerSetup, scaler: torch.amp.GradScaler) -> None:
    """One optimiser step on the gradients in ``.grad``: unscale, clip to ``setup.grad_clip``, step, and the
    scheduler when it runs per iteration."""
    scaler.unscale_(setup.optimizer)
    if setup.grad_clip:
        torch.nn.utils.clip_grad_norm_(setup.parameters(), float(setup.grad_clip))
    scaler.step(setup.optimizer)
    scaler.update()
    if setup.interval == "step":
        setup.scheduler.step()


def end_of_epoch(setup: OptimizerSetup) -> None:
    """Step a per-epoch scheduler (ESP-MedSAM's ExponentialLR); a per-iteration one was stepped already."""
    if setup.interval == "epoch":
        setup.scheduler.step()
