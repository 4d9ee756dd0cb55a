"""Point prompts for training and automatic inference: random points from masks, SAM's point grid, mask NMS.

Coordinates follow segment_anything: (x, y) = (column, row) in pixels of the model's input frame, as
``PromptEncoder`` expects them (it adds 0.5 itself to aim at the pixel centre).
"""

from __future__ import annotations

import torch


def sample_points(
    foreground: torch.Tensor,
    valid: torch.Tensor,
    background_probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random point per image, on the background with probability ``background_probability``.

    Args:
        foreground: (B,H,W) bool, the pixels that count as "on the object".
        valid: (B,H,W) bool, pixels a point may land on (not the ignore label).
        background_probability: chance of drawing from background pixels; an image without foreground (or
            without background) always gets a point from the side it has.
    Returns:
        coords (B,2) float (x, y) and on_foreground (B,) bool.
    """
    b, h, w = foreground.shape
    foreground = foreground & valid
    background = valid & ~foreground
    has_foreground = foreground.flatten(1).any(dim=1)
    has_background = background.flatten(1).any(dim=1)
    wants_background = torch.rand(b, generator=generator, device=generator.device if generator else None)
    wants_background = wants_background.to(foreground.device) < background_probability
    use_background = torch.where(has_foreground & has_background, wants_background, ~has_foreground)
    candidates = torch.where(use_background[:, None, None], background, foreground).flatten(1)
    nothing = ~candidates.any(dim=1)  # an image that is all ignore label: any pixel will do
    candidates[nothing] = True
    index = torch.multinomial(candidates.float(), 1, generator=generator).squeeze(1)  # (B,)
    coords = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], dim=1).float()
    on_foreground = foreground.flatten(1).gather(1, index[:, None]).squeeze(1)
    return coords, on_foreground


def point_grid(points_per_side: int, size: int) -> torch.Tensor:
    """SAM's automatic grid: (n*n, 2) float (x, y), cell centres of an n x n tiling of a size x size frame."""
    offset = 1.0 / (2 * points_per_side)
    steps = torch.linspace(offset, 1 - offset, points_per_side) * size
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression on binary masks.

    Args:
        masks: (N,H,W) bool; scores: (N,).
    Returns:
        indices (M,) of the kept masks, highest score first; a mask is dropped when its IoU with a kept,
        higher-scoring mask exceeds ``iou_threshold``.
    """
    order = torch.argsort(scores, descending=True)
    flat = masks[order].flatten(1).float()
    intersection = flat @ flat.T
    area = flat.sum(dim=1)
    iou = intersection / (area[:, None] + area[None, :] - intersection).clamp_min(1.0)
    kept: list[int] = []
    for i in range(len(order)):
        if all(iou[i, j] <= iou_threshold for j in kept):
            kept.append(i)
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]
