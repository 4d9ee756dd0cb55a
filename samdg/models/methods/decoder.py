"""SAM's stock ``MaskDecoder`` with one mask token per class, and its prompt-free (automatic) decoding.

segment_anything's ``MaskDecoder(num_multimask_outputs=m)`` owns ``m + 1`` mask tokens, each with its own
hypernetwork MLP, and an IoU head with ``m + 1`` outputs. Building it with ``m = K - 1`` gives exactly K tokens,
one per class; :func:`decode_all_masks` calls ``predict_masks`` directly to get all K masks (``forward`` would
slice them into "single" and "multimask" outputs). Weights that keep their shape (transformer, upscaling) are
shared with the pretrained decoder; per-token weights of class k are copied from pretrained token ``k mod 4`` so
every class starts from one of SAM's trained mask heads rather than from noise.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder
from torch import nn


def per_class_mask_decoder(pretrained: MaskDecoder, num_classes: int) -> MaskDecoder:
    """A MaskDecoder with ``num_classes`` mask tokens, initialised from ``pretrained`` (which is left unchanged).

    The two-way transformer module is reused (same object); everything else is a copy.
    """
    if num_classes < 1:
        raise ValueError("a per-class decoder needs at least one class")
    iou_head = pretrained.iou_prediction_head
    activation = type(pretrained.output_upscaling[2])
    decoder = MaskDecoder(
        transformer_dim=pretrained.transformer_dim,
        transformer=pretrained.transformer,
        num_multimask_outputs=num_classes - 1,
        activation=activation,
        iou_head_depth=iou_head.num_layers,
        iou_head_hidden_dim=iou_head.layers[0].out_features,
    )
    source_tokens = pretrained.num_mask_tokens
    pick = [k % source_tokens for k in range(num_classes)]
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


def automatic_prompt_embeddings(prompt_encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prompt encoder's output with no prompt at all.

    Returns (sparse (1,0,256), dense no-mask embedding (1,256,E,E), dense positional encoding (1,256,E,E)).
    The batch dimension is 1 and broadcasts over the image batch inside SAM's two-way transformer (the way
    SAMed decodes a batch of images without prompts).
    """
    sparse, dense = prompt_encoder(points=None, boxes=None, masks=None)
    return sparse, dense, prompt_encoder.get_dense_pe()


def decode_all_masks(
    decoder: MaskDecoder,
    embedding: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    positional: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All K mask tokens of ``decoder``.

    Args:
        embedding: (B,256,E,E) image embeddings.
        sparse: (1 or B, N, 256) prompt tokens; dense: (1 or B,256,E,E); positional: (1,256,E,E).
    Returns:
        logits (B,K,4E,4E) and IoU predictions (B,K).
    """
    return decoder.predict_masks(
        image_embeddings=embedding,
        image_pe=positional,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
