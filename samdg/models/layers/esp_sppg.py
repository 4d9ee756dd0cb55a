"""ESP-MedSAM's self-patch prompt generator (SPPG): a coarse per-patch segmentation that prompts the decoder.

From the image embedding (B,256,E,E): Conv 2x2 stride 2 -> LayerNorm2d -> GELU -> Conv 1x1 gives per-patch logits
(B,K,E/2,E/2), one channel per class (the released model has K = 1; one patch = 32 input pixels for a stride-16
encoder). The prompt: sigmoid of the *detached* logits, hard threshold 0.5, nearest upsampling to E x E, then
Conv 1x1 K->256 -> LayerNorm2d -> GELU, a dense prompt (B,256,E,E) added to the embedding in place of SAM's
"no mask" embedding. Supervision (:func:`patch_targets`): a patch is positive for class k when any of its pixels is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from samdg.labels import LabelSpec, targets_from_label_map


class SelfPatchPromptGenerator(nn.Module):
    """(B,C,E,E) embedding -> (patch logits (B,K,E/2,E/2), dense prompt (B,C,E,E))."""

    def __init__(self, num_classes: int, embedding_dim: int = 256, hidden: int = 64) -> None:
        super().__init__()
        self.patch_decoder = nn.Sequential(nn.Conv2d(embedding_dim, hidden, kernel_size=2, stride=2),
                                           LayerNorm2d(hidden), nn.GELU(), nn.Conv2d(hidden, num_classes, 1))
        self.dense_prompter = nn.Sequential(nn.Conv2d(num_classes, embedding_dim, 1), LayerNorm2d(embedding_dim),
                                            nn.GELU())

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch_logits = self.patch_decoder(embedding)
        binary = (torch.sigmoid(patch_logits.detach()) >= 0.5).to(embedding.dtype)
        binary = F.interpolate(binary, size=tuple(embedding.shape[-2:]), mode="nearest")
        return patch_logits, self.dense_prompter(binary)


def patch_targets(target: torch.Tensor, spec: LabelSpec, grid: tuple[int, int]) -> torch.Tensor:
    """(B,S,S) label map -> (B,K,*grid) float: 1 where any pixel of the patch belongs to class k (max-pool).

    Pixels with the ignore label count as background.
    """
    per_class = targets_from_label_map(target, spec)  # (B,K,S,S)
    return F.adaptive_max_pool2d(per_class, grid)
