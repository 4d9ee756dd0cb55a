"""What every method offers the trainer and the predictor (the method contract, in code).

A method is an ``nn.Module`` built as ``cls(sam, settings, label_spec)`` (see :mod:`.registry`); ``settings`` is
its settings dataclass (:mod:`.settings`), checked again when the method is built. Tensors that cross the contract:

- ``batch["image"]``: (B,3,S,S) float in [0,1], S = the variant's input size (the backbone applies its own
  intensity convention); ``batch["target"]``: (B,S,S) int64 label map (0 = background, may hold the ignore label);
  ``batch["domain"]``: list of B domain names; ``batch["keys"]``: B "case:slice" names; optionally
  ``batch["features"]``: cached encoder outputs (fp16, see :meth:`SegmentationMethod.cacheable_features`).
- ``forward(batch) -> dict`` with at least ``"logits"`` (B,K,h,w); ``loss(outputs, batch) -> (total, parts)``
  where ``parts`` maps the same names to floats at every call (they are averaged over processes per epoch).
- ``predict(images, features=None) -> logits (B,K,h,w)``: automatic (prompt-free) mode; h may be lower than S
  (SAM's decoder returns S/4); callers resize with :func:`samdg.models.methods.losses.resize_logits`.

What trains, declared once per method (the trainer reads these and nothing else):

- :meth:`~SegmentationMethod.trainable_parameters` is the exact set the optimiser updates; every other parameter is
  frozen (``requires_grad`` False, set by :meth:`~SegmentationMethod.freeze_all_but_trainable`). Every trainable
  parameter must receive a gradient at every step, or :meth:`~SegmentationMethod.ddp_find_unused_parameters` must
  say True (DDP then searches the graph for unused ones, which costs time).
- :meth:`~SegmentationMethod.frozen_modules` stay in eval mode while the method trains (batch-norm statistics
  kept, dropout off); :meth:`~SegmentationMethod.trainable_modules` follow ``train()``/``eval()`` even when they sit
  inside a frozen module (an adapter in a frozen encoder keeps its dropout and drop-path). ``train()`` applies the
  frozen declarations first, then the trainable ones.
- :meth:`~SegmentationMethod.teacher_modules`: frozen modules only training uses (a distillation teacher). They are
  not sub-modules: not in ``state_dict`` (checkpoints hold the method alone), not in ``parameters()`` (so never in
  the optimiser or DDP); the trainer moves them to the device, freezes them and keeps them in eval mode.
- :meth:`~SegmentationMethod.configure_optimizers` ``(total_steps) -> OptimizerSetup``: parameter groups,
  optimiser, scheduler (stepped per iteration or per epoch) and gradient clipping; default AdamW + linear warm-up
  + poly decay on one group, from the settings (:mod:`.optimization`).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.methods.losses import dice_bce_loss
from samdg.models.methods.optimization import OptimizerSetup, warmup_poly_adamw
from samdg.models.methods.settings import MethodSettings, SamMethodSettings, checked_settings


def unique_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` in order, each once (a module may be listed inside another)."""
    seen: set[int] = set()
    parameters = []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
    return parameters


class SegmentationMethod(nn.Module):
    """The contract with defaults; a method implements at least ``encode``, ``decode`` (or ``forward`` and
    ``predict``) and declares what trains (``trainable_modules`` and/or ``trainable_parameters``)."""

    method_name = "unregistered"
    settings_class: type = MethodSettings  # set by @register_method

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__()
        self.settings = checked_settings(self.settings_class, settings, f"methods.{self.method_name}")
        self.label_spec = label_spec
        self.num_classes = label_spec.num_classes

    @classmethod
    def settings_for_training(cls, settings: Any, training_domains: list[str], plans: Any) -> Any:
        """The settings a training run builds the method with, completed from its data (the sorted domains of the
        training cases, the plans); saved in the checkpoint, so prediction rebuilds the same model. Default:
        unchanged."""
        return settings

    @classmethod
    def training_stages(cls, settings: Any) -> list[tuple[str, Any]]:
        """The stages one ``samdg_train`` call trains, in order, as (name, settings of that stage's run). Stages
        before the last are prerequisites: the trainer skips one whose folder (:meth:`stage_folder`) already holds
        a finished model of the same plan. Default: one stage, these settings."""
        return [("", settings)]

    @classmethod
    def stage_folder(cls, settings: Any) -> str:
        """Sub-folder of the fold folder where a run with these settings writes ("" = the fold folder itself); a
        preliminary stage (espmedsam's distillation) keeps its own model there."""
        return ""

    def load_teachers(self, stage_dir: Path) -> list[str]:
        """Called when a training run has built the method, fresh or continued, before the embedding cache and the
        first step, on every process (teachers are never in checkpoints): e.g. load a teacher that an earlier
        stage trained. ``stage_dir``: this run's folder. Returns lines for the training log."""
        return []

    def before_training(self, fold_dir: Path) -> list[str]:
        """Called once before a fresh (not continued) run's first step, on every process: e.g. load what an
        earlier stage in ``fold_dir`` trained. Returns lines for the training log."""
        return []

    # --- what trains ---------------------------------------------------------------------------------------------

    def frozen_modules(self) -> list[nn.Module]:
        """Modules kept in eval mode while the method trains (their parameters are frozen unless declared
        trainable)."""
        return []

    def trainable_modules(self) -> list[nn.Module]:
        """Modules that train: in train mode with the method, their parameters updated."""
        return []

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the parameters the optimiser updates: by default those of :meth:`trainable_modules`.

        Independent of the current ``requires_grad`` flags (they are set from this list).
        """
        return unique_parameters(self.trainable_modules())

    def teacher_modules(self) -> dict[str, nn.Module]:
        """Frozen modules that only training uses (e.g. a distillation teacher), by name; see the module doc."""
        return {}

    def ddp_find_unused_parameters(self) -> bool:
        """True when some trainable parameter may get no gradient in a step (DDP must then search for it)."""
        return False

    def freeze_all_but_trainable(self) -> list[nn.Parameter]:
        """``requires_grad`` True exactly for :meth:`trainable_parameters` (teachers included in the freeze);
        returns them."""
        self.requires_grad_(False)
        for teacher in self.teacher_modules().values():
            teacher.requires_grad_(False)
        trainable = self.trainable_parameters()
        for parameter in trainable:
            parameter.requires_grad_(True)
        return trainable

    def train(self, mode: bool = True) -> "SegmentationMethod":
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
            for module in self.trainable_modules():
                module.train()
        for teacher in self.teacher_modules().values():
            teacher.eval()
        return self

    def configure_optimizers(self, total_steps: int) -> OptimizerSetup:
        """Optimiser and schedule for ``total_steps`` optimiser steps (default: AdamW + warm-up + poly, one group)."""
        return warmup_poly_adamw([{"params": self.trainable_parameters()}], self.settings, total_steps)

    def validation_loss_selects_best(self) -> bool:
        """True: ``checkpoint_best.pth`` keeps the epoch with the lowest validation loss (:meth:`loss` of
        :meth:`forward` on the per-epoch validation batches, in eval mode) instead of the highest EMA of the
        validation Dice; for a stage whose Dice means nothing (a distillation stage, whose decoder does not train)."""
        return False

    # --- encoder outputs and the embedding cache -----------------------------------------------------------------

    def cacheable_features(self) -> tuple[str, ...] | None:
        """Names of the encoder taps the method needs besides the embedding, if its encoder is frozen.

        ``None`` (the default) means the encoder output changes during training (adapters, LoRA, fine-tuning),
        so it must never be cached. ``()`` means only the final embedding is needed.
        """
        return None

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,S,S) in [0,1] -> ``{"embedding": (B,256,E,E), tap: tensor, ...}``."""
        raise NotImplementedError

    def encode_for_cache(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the embedding cache stores for (B,3,S,S) images: by default :meth:`encode`'s output (a
        distillation stage may cache its frozen teacher's embedding instead)."""
        return self.encode(images)

    def cached_feature_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Per-slice shapes (C,H,W) of what :meth:`encode_for_cache` stores, given the encoder's own ``shapes``
        (``embedding`` and its taps): unchanged by default; used to announce the cache's size before it is built."""
        return shapes

    def cache_identity(self) -> dict[str, Any]:
        """Entries that replace or extend the cache key's description of the encoder (``variant``,
        ``checkpoint``: a path, ...) when :meth:`encode_for_cache` runs another encoder than the plan's."""
        return {}

    def features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The cached features when the batch carries them (in the decoder's dtype), else a fresh encoder pass."""
        cached = batch.get("features")
        return self.in_decoder_dtype(cached) if cached is not None else self.encode(batch["image"])

    def in_decoder_dtype(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cached features are fp16; outside autocast the decoder needs its own dtype."""
        dtype = next(self.parameters()).dtype
        return {name: (t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t)
                for name, t in features.items()}

    # --- training and prediction ---------------------------------------------------------------------------------

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features -> per-class logits (B,K,h,w) in automatic mode."""
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"logits": self.decode(self.features(batch))}

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Automatic mode: (B,3,S,S) in [0,1] -> per-class logits (B,K,h,w)."""
        return self.decode(self.in_decoder_dtype(features) if features is not None else self.encode(images))

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class FrozenSamMethod(SegmentationMethod):
    """A method on SAM whose image encoder and prompt encoder are frozen (adapters or LoRA inside the encoder may
    train: declare them). Holds ``image_encoder``, ``prompt_encoder`` and ``input_size``; the loss is the shared
    per-class soft Dice + BCE with the settings' weights."""

    settings_class: type = SamMethodSettings

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.input_size = int(sam.config.input_size)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.image_encoder, self.prompt_encoder]

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,S,S) in [0,1] -> {"embedding": (B,256,E,E), tap: (B,C,h,w) for each cacheable tap}; no gradient
        (no activations kept) when the encoder is frozen, i.e. when its features are cacheable."""
        taps = self.cacheable_features()
        with torch.no_grad() if taps is not None else nullcontext():
            embedding, tapped = self.image_encoder.forward_features(images, taps or ())
        return {"embedding": embedding, **tapped}

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return dice_bce_loss(outputs["logits"], batch["target"], self.label_spec,
                             dice_weight=self.settings.dice_weight, bce_weight=self.settings.bce_weight)

    def mask_decoder_parts(self, decoder: nn.Module) -> list[nn.Module]:
        """The parts of a per-class mask decoder that make masks: all but its IoU head (automatic mode has no
        prompt, so nothing to score; the head would get no gradient)."""
        return [module for name, module in decoder.named_children() if name != "iou_prediction_head"]
