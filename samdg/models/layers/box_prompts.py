"""Per-class box prompts for a per-class SAM decoder: boxes from label maps, DB-SAM's jitter, prompted decoding.

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


def boxes_from_label_map(target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,H,W) label map -> tight boxes (B,K,4) float, NaN where class k is absent from image b."""
    masks = targets_from_label_map(target, spec) > 0  # (B,K,H,W)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (B,K,H), (B,K,W)
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
