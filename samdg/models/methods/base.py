"""What every method offers the trainer and the predictor (the method contract, in code).

A method is an ``nn.Module`` built as ``cls(sam, settings, label_spec)``. Tensors that cross the contract:

- ``batch["image"]``: (B,3,S,S) float in [0,1], S = the variant's input size (the backbone applies its own
  intensity convention); ``batch["target"]``: (B,S,S) int64 label map (0 = background, may hold the ignore label);
  ``batch["domain"]``: list of B domain names; optionally ``batch["features"]``: the cached encoder outputs
  (see :meth:`SegmentationMethod.cacheable_features`).
- ``forward(batch) -> dict`` with at least ``"logits"`` (B,K,h,w); ``loss(outputs, batch) -> (total, parts)``
  where ``parts`` maps the same names to floats at every call (they are averaged over processes per epoch).
- ``predict(images, features=None) -> logits (B,K,h,w)``: automatic (prompt-free) mode; h may be lower than S
  (SAM's decoder returns S/4); callers resize with :func:`samdg.models.methods.losses.resize_logits`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samdg.labels import LabelSpec


class SegmentationMethod(nn.Module):
    """Base class with the shared plumbing; subclasses implement ``forward``, ``loss`` and ``decode``."""

    method_name = "unregistered"

    def __init__(self, sam: nn.Module, settings: dict[str, Any], label_spec: LabelSpec) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.label_spec = label_spec
        self.num_classes = label_spec.num_classes

    # --- encoder outputs and the embedding cache -------------------------------------------------------------

    def cacheable_features(self) -> tuple[str, ...] | None:
        """Names of the encoder taps the method needs besides the embedding, if its encoder is frozen.

        ``None`` (the default) means the encoder output changes during training (adapters, LoRA, fine-tuning),
        so it must never be cached. ``()`` means only the final embedding is needed.
        """
        return None

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,S,S) in [0,1] -> ``{"embedding": (B,256,E,E), tap: tensor, ...}``."""
        raise NotImplementedError

    def features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The cached features when the batch carries them, else a fresh encoder pass."""
        cached = batch.get("features")
        return cached if cached is not None else self.encode(batch["image"])

    # --- training and prediction -----------------------------------------------------------------------------

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Automatic mode: (B,3,S,S) in [0,1] -> per-class logits (B,K,h,w)."""
        raise NotImplementedError

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def optimizer_settings(self) -> dict[str, Any]:
        """``lr``, ``weight_decay``, ``betas``, ``warmup_fraction``, ``poly_exponent``, ``grad_clip``."""
        keys = ("lr", "weight_decay", "betas", "warmup_fraction", "poly_exponent", "grad_clip")
        defaults = {"lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.999), "warmup_fraction": 0.05,
                    "poly_exponent": 0.9, "grad_clip": 12.0}
        return {key: self.settings.get(key, defaults[key]) for key in keys}
