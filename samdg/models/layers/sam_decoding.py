"""SAM's prompt encoder and mask decoder driven piece by piece, on the stock segment-anything modules.

segment_anything's ``MaskDecoder.predict_masks`` fixes its output tokens to [IoU token, mask tokens], repeats the
image embedding once per prompt and always upscales. Methods need other combinations: all K mask tokens of a
per-class decoder (sam, dapsam), the transformer's updated image tokens and the IoU token without any mask
(DeSAM's PRIM), or their own queries without an IoU token (ESP-MedSAM). The functions here are that decoder, split
where the methods need it, on the same modules and weights (same state-dict keys, never a fork):

- prompts: :func:`no_prompt`, :func:`point_prompts`, :func:`box_prompts` (+ :func:`whole_image_boxes`);
- :func:`run_two_way_transformer` with the output tokens as an argument (:func:`sam_output_tokens` gives SAM's own);
- :func:`upscale_image_tokens` and :func:`hypernetwork_masks`; :func:`decode_masks` chains them like
  ``predict_masks``;
- :func:`per_class_mask_decoder`: a stock ``MaskDecoder`` with one mask token per class.

Batch rule: image embeddings, prompt tokens and dense prompts each have batch N or 1; batch 1 is shared by all N
(one image with N prompts, or N images without a prompt).
"""

from __future__ import annotations

from typing import Sequence

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn

# --- prompts ----------------------------------------------------------------------------------------------------


def no_prompt(prompt_encoder: PromptEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """No point, box or mask: sparse (1,0,256) and the learned "no mask" dense embedding (1,256,E,E)."""
    return prompt_encoder(points=None, boxes=None, masks=None)


def point_prompts(prompt_encoder: PromptEncoder, coords: torch.Tensor,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One point per prompt: coords (N,2) (x, y) in input pixels, labels (N,) (1 positive, 0 negative; default all
    positive) -> sparse (N,2,256) (the point + SAM's padding token), dense "no mask" (1,256,E,E)."""
    if labels is None:
        labels = torch.ones(coords.shape[0], device=coords.device)
    sparse, dense = prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
    return sparse, dense[:1]


def box_prompts(prompt_encoder: PromptEncoder, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N,4) (x0, y0, x1, y1) in input pixels -> sparse (N,2,256) (two corners), dense (1,256,E,E)."""
    sparse, dense = prompt_encoder(points=None, boxes=boxes, masks=None)
    return sparse, dense[:1]


def whole_image_boxes(n: int, input_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The whole input frame as a box, N times: (N,4) = [0, 0, S, S] (DeSAM-B's prompt)."""
    return torch.tensor([[0.0, 0.0, float(input_size), float(input_size)]], device=device).expand(n, -1)


# --- the decoder ------------------------------------------------------------------------------------------------


def sam_output_tokens(decoder: MaskDecoder, iou_token: bool = True) -> torch.Tensor:
    """SAM's own output tokens: [IoU token, mask tokens] (1+M,256), or the M mask tokens alone."""
    if not iou_token:
        return decoder.mask_tokens.weight
    return torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)


def _common_batch(*tensors: torch.Tensor) -> int:
    sizes = {t.shape[0] for t in tensors} - {1}
    if len(sizes) > 1:
        raise ValueError(f"batch sizes {sorted(sizes)} do not match (each must be N or 1)")
    return sizes.pop() if sizes else 1


def run_two_way_transformer(
    decoder: MaskDecoder,
    embedding: torch.Tensor,
    positional: torch.Tensor,
    output_tokens: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's two-way transformer on ``output_tokens`` followed by the prompt tokens (``predict_masks``' assembly).

    Args:
        decoder: a stock ``MaskDecoder`` (only its ``transformer`` is used).
        embedding: (N or 1,256,E,E) image embeddings; positional: (1,256,E,E) (``prompt_encoder.get_dense_pe()``).
        output_tokens: (Q,256) queries, e.g. :func:`sam_output_tokens`; any number, with or without an IoU token.
        sparse: (N or 1,T,256) prompt tokens (T may be 0); dense: (N or 1,256,E,E), added to the embedding.
    Returns:
        the Q output tokens after the transformer (N,Q,256) and the updated image tokens (N,256,E,E).
    """
    n = _common_batch(embedding, sparse, dense)
    queries = output_tokens.shape[0]
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1).expand(n, -1, -1)
    src = (embedding + dense).expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    outputs, image_tokens = decoder.transformer(src, positional.expand(n, -1, -1, -1), tokens)
    return outputs[:, :queries], image_tokens.transpose(1, 2).reshape(b, c, h, w)


def upscale_image_tokens(decoder: MaskDecoder, image_tokens: torch.Tensor) -> torch.Tensor:
    """SAM's output upscaling: (N,256,E,E) -> (N,C',4E,4E) (C' = 32 for SAM's decoder)."""
    return decoder.output_upscaling(image_tokens)


def hypernetwork_masks(token_outputs: torch.Tensor, upscaled: torch.Tensor,
                       hypernetworks: Sequence[nn.Module]) -> torch.Tensor:
    """Mask logits as SAM forms them: token k through hypernetwork k, dot product with every upscaled pixel.

    Args:
        token_outputs: (N,K,256); upscaled: (N,C',H,W); hypernetworks: K modules 256 -> C' (the same module may
            appear K times: one shared MLP).
    Returns:
        (N,K,H,W) logits.
    """
    weights = torch.stack([mlp(token_outputs[:, k]) for k, mlp in enumerate(hypernetworks)], dim=1)
    n, c, h, w = upscaled.shape
    return (weights @ upscaled.view(n, c, h * w)).view(n, -1, h, w)


def decode_masks(decoder: MaskDecoder, embedding: torch.Tensor, positional: torch.Tensor, sparse: torch.Tensor,
                 dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All M mask tokens of ``decoder`` and its IoU head, as ``predict_masks`` computes them.

    Shapes as :func:`run_two_way_transformer`. Returns logits (N,M,4E,4E) and IoU predictions (N,M).
    """
    outputs, image_tokens = run_two_way_transformer(decoder, embedding, positional, sam_output_tokens(decoder),
                                                    sparse, dense)
    masks = hypernetwork_masks(outputs[:, 1:], upscale_image_tokens(decoder, image_tokens),
                               decoder.output_hypernetworks_mlps)
    return masks, decoder.iou_prediction_head(outputs[:, 0])


def per_class_mask_decoder(pretrained: MaskDecoder, num_classes: int) -> MaskDecoder:
    """A stock MaskDecoder with ``num_classes`` mask tokens, initialised from ``pretrained`` (left unchanged).

    ``MaskDecoder(num_multimask_outputs=K - 1)`` owns K mask tokens, each with its hypernetwork MLP, and an IoU
    head with K outputs. The two-way transformer module is reused (same object); everything else is a copy. Class
    k starts from pretrained token ``k mod 4`` (its token, hypernetwork and IoU output), so every class begins
    from one of SAM's trained mask heads rather than from noise.
    """
    if num_classes < 1:
        raise ValueError("a per-class decoder needs at least one class")
    iou_head = pretrained.iou_prediction_head
    decoder = MaskDecoder(
        transformer_dim=pretrained.transformer_dim,
        transformer=pretrained.transformer,
        num_multimask_outputs=num_classes - 1,
        activation=type(pretrained.output_upscaling[2]),
        iou_head_depth=iou_head.num_layers,
        iou_head_hidden_dim=iou_head.layers[0].out_features,
    )
    pick = [k % pretrained.num_mask_tokens for k in range(num_classes)]
    with torch.no_grad():
        decoder.iou_token.load_state_dict(pretrained.iou_token.state_dict())
        decoder.output_upscaling.load_state_dict(pretrained.output_upscaling.state_dict())
        decoder.mask_tokens.weight.copy_(pretrained.mask_tokens.weight[pick])
        for k, source in enumerate(pick):
            decoder.output_hypernetworks_mlps[k].load_state_dict(pretrained.output_hypernetworks_mlps[source].state_dict())
        for layer, source_layer in zip(decoder.iou_prediction_head.layers[:-1], iou_head.layers[:-1]):
            layer.load_state_dict(source_layer.state_dict())
        last, source_last = decoder.iou_prediction_head.layers[-1], iou_head.layers[-1]
        last.weight.copy_(source_last.weight[pick])
        last.bias.copy_(source_last.bias[pick])
    return decoder
