"""What ``configure_optimizers`` returns, and the default recipe (AdamW + linear warm-up + poly decay).

A method's ``configure_optimizers(total_steps)`` (nnU-Net / Lightning style) returns an :class:`OptimizerSetup`:
the optimiser over its parameter groups, a learning-rate scheduler, when the trainer steps it (every iteration or
every epoch) and the gradient-norm clip. The trainer only calls it, steps what it gets and saves both states in
every checkpoint. The default, :func:`warmup_poly_adamw`: AdamW on one group; the rate rises linearly for the first
``warmup_fraction`` of all iterations, then decays as ``(1 - t / T) ** poly_exponent`` (nnU-Net's poly rule, per
iteration so short runs decay smoothly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import torch


@dataclass
class OptimizerSetup:
    """An optimiser, its scheduler and how the trainer drives them.

    ``interval``: ``"step"`` steps the scheduler after every optimiser step, ``"epoch"`` after every epoch.
    ``grad_clip``: the gradient norm over all optimised parameters is clipped to it (None or 0 = no clipping).
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    interval: Literal["step", "epoch"] = "step"
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.interval not in ("step", "epoch"):
            raise ValueError(f"scheduler interval must be 'step' or 'epoch', not {self.interval!r}")

    def parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter the optimiser updates, in group order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def warmup_poly_factor(step: int, total: int, warmup: int, exponent: float) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return max(0.0, 1.0 - progress) ** exponent


def warmup_poly_adamw(parameter_groups: Iterable[Any], settings: Any, total_steps: int) -> OptimizerSetup:
    """AdamW over ``parameter_groups`` (parameters, or dicts with ``params`` and per-group options) with the
    :class:`~samdg.models.methods.settings.MethodSettings` fields ``lr``, ``weight_decay``, ``betas``,
    ``warmup_fraction``, ``poly_exponent`` and ``grad_clip``; the scheduler is stepped per iteration."""
    groups = list(parameter_groups)
    if not groups:
        raise ValueError("the method has no trainable parameters")
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay,
                                  betas=tuple(settings.betas))
    warmup = int(math.floor(settings.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_poly_factor(step, total_steps, warmup, settings.poly_exponent))
    return OptimizerSetup(optimizer, scheduler, "step", settings.grad_clip)
