"""Optimiser and learning-rate schedule from the method's ``optimizer_settings()``.

AdamW on the method's trainable parameters; the learning rate rises linearly for the first
``warmup_fraction`` of all iterations, then decays as ``(1 - t / T) ** poly_exponent`` (nnU-Net's poly rule,
applied per iteration rather than per epoch so short runs decay smoothly). The schedule is stepped once per
iteration and its state is saved in every checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(parameters: list[nn.Parameter], settings: dict) -> torch.optim.Optimizer:
    if not parameters:
        raise ValueError("the method has no trainable parameters")
    return torch.optim.AdamW(parameters, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"]),
                             betas=tuple(float(b) for b in settings.get("betas", (0.9, 0.999))))


def warmup_poly_factor(step: int, total: int, warmup: int, exponent: float) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return max(0.0, 1.0 - progress) ** exponent


def build_scheduler(optimizer: torch.optim.Optimizer, settings: dict,
                    total_iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(math.floor(float(settings.get("warmup_fraction", 0.0)) * total_iterations))
    exponent = float(settings.get("poly_exponent", 0.9))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_poly_factor(step, total_iterations, warmup, exponent))
