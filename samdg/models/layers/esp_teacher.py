"""ESP-MedSAM's distillation teacher (MMDKD): a frozen image encoder, plain or medical.

- Plain (the paper's common knowledge): a SAM image encoder as pretrained, ``teacher_variant`` with its weights or
  a copy of the student's own aggregator.
- Medical (the paper's domain knowledge): the same encoder with its own modality controllers (one key/value token
  per head and an expert MLP per block and controller, the controller slots of the block protocol) trained on the
  training data's segmentation (espmedsam's ``teacher`` stage). Image i is encoded with the controller its
  weights pick, so the student's controller k imitates the teacher's controller k.

Both give the plain embedding too (:meth:`DistillationTeacher.plain`: the encoder with its controller slots
emptied, :func:`controllers_detached`), the target of the common-knowledge term.

Images arrive at the student's input size and are resized to the teacher's; the embedding is resized to the
student's grid, so teacher and student embeddings compare position by position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from samdg.models.layers.esp_controller import WEIGHTS_KEY, install_controllers


@contextmanager
def controllers_detached(encoder: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``encoder`` runs as the plain aggregator: every ``kv_prompt`` and ``parallel_mlp`` slot is
    emptied (restored on exit). Gradient checkpointing is off meanwhile, since its backward recompute would run with
    the controllers back in place."""
    slots = [(attention, "kv_prompt") for _, attention in encoder.attention_modules()]
    slots += [(block, "parallel_mlp") for _, block in encoder.transformer_blocks()]
    held = [(owner, name, getattr(owner, name)) for owner, name in slots]
    checkpointing = getattr(encoder, "gradient_checkpointing", False)
    try:
        for owner, name, _ in held:
            setattr(owner, name, None)
        encoder.gradient_checkpointing = False
        yield encoder
    finally:
        for owner, name, module in held:
            setattr(owner, name, module)
        encoder.gradient_checkpointing = checkpointing


class DistillationTeacher(nn.Module):
    """Frozen encoder -> embeddings (B,256,E,E) at the student's grid E, one per image or one per controller."""

    def __init__(self, encoder: nn.Module, grid: int) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.grid = int(grid)
        self.num_controllers = 0  # plain until make_medical()

    @property
    def is_medical(self) -> bool:
        return self.num_controllers > 0

    def make_medical(self, num_controllers: int, encoder_state: dict[str, torch.Tensor]) -> None:
        """Give the encoder ``num_controllers`` controllers and load ``encoder_state`` (the whole encoder with its
        trained controllers, as the teacher stage saved it). Raises RuntimeError when the state does not fit."""
        install_controllers(self.encoder, num_controllers)
        self.encoder.load_state_dict(encoder_state, strict=True)
        self.encoder.requires_grad_(False).eval()
        self.num_controllers = num_controllers

    def forward(self, images: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """images (B,3,S,S) as the encoder takes them; weights (B,M) over the medical teacher's controllers
        (ignored by a plain teacher) -> (B,256,E,E)."""
        return self._embed(images, {WEIGHTS_KEY: weights.to(images.dtype)} if self.is_medical else None)

    def _embed(self, images: torch.Tensor, context: dict | None) -> torch.Tensor:
        """(B,3,S,S) resized to the encoder's input -> (B,256,E,E) resized to the student's grid."""
        size = int(self.encoder.config.input_size)
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        embedding, _ = self.encoder.forward_features(images, context=context)
        if embedding.shape[-1] != self.grid:
            embedding = F.interpolate(embedding, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return embedding

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,S,S) -> (B,256,E,E): the embedding of the encoder without controllers (the common-knowledge
        target; a plain teacher's only embedding)."""
        if not self.is_medical:
            return self(images)
        with controllers_detached(self.encoder):
            return self._embed(images, None)

    def per_controller(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> (B,M*256,E,E): the embedding under each of the M controllers, stacked along the channels
        (a plain teacher: M = 1), so that it can be cached once per slice whatever controller a batch picks."""
        if not self.is_medical:
            return self(images)
        eye = torch.eye(self.num_controllers, device=images.device)
        return torch.cat([self(images, eye[k].expand(images.shape[0], -1)) for k in range(self.num_controllers)],
                         dim=1)

    @staticmethod
    def pick(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B,M*C,E,E) from :meth:`per_controller` and weights (B,M) -> (B,C,E,E), the weighted mix (one-hot:
        the image's controller)."""
        count = weights.shape[1]
        stacked = stacked.view(stacked.shape[0], count, -1, *stacked.shape[-2:])
        return torch.einsum("bm,bmchw->bchw", weights.to(stacked.dtype), stacked)
