"""Per-class box prompts for a per-class SAM decoder: boxes from masks and label maps, their geometry (window crop,
flip, resize: the steps a slice takes to the model input), DB-SAM's jitter, prompted decoding.

Boxes are (x0, y0, x1, y1) in input pixels, x1/y1 exclusive (the pixel edges around the mask). A batch of boxes is
(B,K,4), one per image and class; a row of NaN means "no box": that class is empty in that image (its logits are
:data:`EMPTY_LOGIT`), as a slice without a box is empty in prompted prediction.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder

from samdg.labels import LabelSpec, targets_from_label_map
from samdg.models.layers.sam_decoding import box_prompts, decode_masks

EMPTY_LOGIT = -20.0  # sigmoid ~ 2e-9: a class without a box is empty
RELEASED_JITTER_FRAME = 256  # DB-SAM jitters boxes by 0-19 px on a 256 px mask


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(...,H,W) binary masks -> tight boxes (...,4) float (pixel edges), NaN where a mask is empty."""
    masks = masks > 0
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (...,H), (...,W)
    present = rows.any(dim=-1)

    def span(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(hits.shape[-1], device=hits.device)
        first = torch.where(hits, index, hits.shape[-1]).amin(dim=-1)
        last = torch.where(hits, index, -1).amax(dim=-1)
        return first, last + 1

    x0, x1 = span(cols)
    y0, y1 = span(rows)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    return torch.where(present[..., None], boxes, torch.full_like(boxes, float("nan")))


def boxes_from_label_map(target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,H,W) label map -> tight boxes (B,K,4) float, NaN where class k is absent from image b."""
    return boxes_from_masks(targets_from_label_map(target, spec))


def crop_boxes(boxes: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Boxes (...,4) of a slice -> the same boxes in the window ``[top, top+height) x [left, left+width)``,
    clipped to it; a box that does not overlap the window becomes NaN (its class is empty there)."""
    shifted = boxes - boxes.new_tensor([left, top, left, top])
    clipped = torch.minimum(shifted.clamp_min(0), boxes.new_tensor([width, height, width, height]))
    empty = (clipped[..., 2] <= clipped[..., 0]) | (clipped[..., 3] <= clipped[..., 1])
    return torch.where(empty[..., None], torch.full_like(clipped, float("nan")), clipped)


def flip_boxes(boxes: torch.Tensor, axes: tuple[int, ...], height: int, width: int) -> torch.Tensor:
    """Boxes (...,4) of an (H,W) slice -> the boxes of the slice flipped along ``axes`` (-1: columns, -2: rows)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    if -1 in axes:
        x0, x1 = width - x1, width - x0
    if -2 in axes:
        y0, y1 = height - y1, height - y0
    return torch.stack([x0, y0, x1, y1], dim=-1)


def scale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Boxes (...,4) on an (h,w) grid -> the same region on a resized (h',w') grid (pixel edges scale exactly)."""
    scale_x, scale_y = to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]
    return boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])


def jitter_boxes(boxes: torch.Tensor, input_size: int, max_pixels_at_256: int = 20,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """DB-SAM's training boxes: each side moved outwards by a random 0..max-1 px on a 256 px frame (scaled to the
    input size), clipped to the image. (…,4) -> (…,4); NaN rows stay NaN."""
    steps = torch.randint(0, max_pixels_at_256, boxes.shape, generator=generator).to(boxes.device, boxes.dtype)
    outwards = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
    moved = boxes + outwards * steps * (input_size / RELEASED_JITTER_FRAME)
    return moved.clamp(0, input_size)


def box_prompted_logits(decoder: MaskDecoder, prompt_encoder: PromptEncoder, embedding: torch.Tensor,
                        boxes: torch.Tensor) -> torch.Tensor:
    """Class k of image b decoded from its box with the decoder's mask token k.

    Args:
        decoder: a per-class MaskDecoder (K mask tokens); embedding: (B,256,E,E); boxes: (B,K,4), NaN = no box.
    Returns:
        (B,K,4E,4E) logits; classes without a box are :data:`EMPTY_LOGIT`. One decoder pass per (image, box) pair.
    """
    batch, classes = boxes.shape[:2]
    size = 4 * embedding.shape[-1]
    logits = embedding.new_full((batch, classes, size, size), EMPTY_LOGIT)
    image_index, class_index = torch.nonzero(~boxes.isnan().any(dim=-1), as_tuple=True)
    if len(image_index) == 0:
        return logits + 0 * embedding.sum()  # keeps the graph connected: a batch without any box still backwards
    sparse, dense = box_prompts(prompt_encoder, boxes[image_index, class_index].to(embedding.dtype))
    masks, _ = decode_masks(decoder, embedding[image_index], prompt_encoder.get_dense_pe(), sparse, dense)
    prompted = masks[torch.arange(len(class_index), device=masks.device), class_index]  # (P,4E,4E)
    return logits.index_put((image_index, class_index), prompted)
