"""SAM's two-way transformer run on its own, without the mask decoder's upscaling and hypernetworks.

segment_anything's ``MaskDecoder.predict_masks`` assembles the tokens [IoU token, mask tokens, prompt tokens],
adds the dense prompt embedding to the image embedding, runs the two-way transformer and then turns the mask
tokens into masks. Methods that want the transformer's *other* outputs (the updated image tokens, the IoU token)
call :func:`run_two_way_transformer`, which repeats exactly that token assembly on the stock modules (no fork,
same weights, same state-dict keys).
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


def run_two_way_transformer(
    decoder: MaskDecoder,
    embedding: torch.Tensor,
    positional: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One transformer pass per prompt.

    Args:
        decoder: a stock ``MaskDecoder`` (its ``iou_token``, ``mask_tokens`` and ``transformer`` are used).
        embedding: (N or 1, 256, E, E) image embeddings; batch 1 is shared by all N prompts.
        positional: (1, 256, E, E) dense positional encoding (``prompt_encoder.get_dense_pe()``).
        sparse: (N, T, 256) prompt tokens; dense: (N or 1, 256, E, E) dense prompt embeddings.
    Returns:
        output tokens (N, 1 + M + T, 256) (index 0 is the IoU token, 1..M the mask tokens) and the updated image
        tokens reshaped to (N, 256, E, E) (what SAM would upscale into masks).
    """
    n = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    src = (embedding + dense).expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, image_tokens = decoder.transformer(src, positional.expand(n, -1, -1, -1), tokens)
    return hs, image_tokens.transpose(1, 2).reshape(b, c, h, w)
