"""ESP-MedSAM's query-decoupled modality decoder (QDMD): SAM's two-way transformer on learnable queries.

No IoU token and no point or box prompt: the output tokens are G x K learnable queries, one per (controller group g,
class k), plus optionally one query that only takes part in attention (the released model's seventh). All queries
attend together (as in the released code); query (g, k) goes through its own hypernetwork MLP (the paper's
per-modality MLPs; SAM gives every mask token its own) or through one shared MLP (``shared_hypernetwork``, the
released decoder), and its dot product with the upscaled image tokens is the mask logit of class k for group g.
Each image's K masks are the mix of the groups by its controller weights (B,G): one-hot picks its group.

The transformer and the upscaling are SAM's pretrained modules (same state-dict names); query (g, k) starts from
SAM's mask token k mod 4 and its hypernetwork, the attention-only query from the IoU token.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from samdg.models.layers.sam_decoding import hypernetwork_masks, run_two_way_transformer, upscale_image_tokens


def _hypernetwork_like(source: MLP) -> MLP:
    copy = MLP(source.layers[0].in_features, source.layers[0].out_features, source.layers[-1].out_features,
               source.num_layers)
    copy.load_state_dict(source.state_dict())
    return copy


class QueryDecoupledDecoder(nn.Module):
    """Embedding (B,256,E,E) + dense prompt (B,256,E,E) + controller weights (B,G) -> logits (B,K,4E,4E)."""

    def __init__(self, sam_decoder: MaskDecoder, num_groups: int, num_classes: int, shared_hypernetwork: bool,
                 attention_only_query: bool) -> None:
        super().__init__()
        self.num_groups, self.num_classes = num_groups, num_classes
        self.transformer = sam_decoder.transformer
        self.output_upscaling = sam_decoder.output_upscaling
        masks = num_groups * num_classes
        self.queries = nn.Embedding(masks + int(attention_only_query), sam_decoder.transformer_dim)
        pretrained = sam_decoder.output_hypernetworks_mlps
        pick = [k % len(pretrained) for _ in range(num_groups) for k in range(num_classes)]
        with torch.no_grad():
            self.queries.weight[:masks].copy_(sam_decoder.mask_tokens.weight[pick])
            if attention_only_query:
                self.queries.weight[masks:].copy_(sam_decoder.iou_token.weight)
        sources = pick[:1] if shared_hypernetwork else pick
        self.hypernetworks = nn.ModuleList(_hypernetwork_like(pretrained[k]) for k in sources)

    def forward(self, embedding: torch.Tensor, dense: torch.Tensor, positional: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """embedding, dense: (B,256,E,E); positional: (1,256,E,E); weights: (B,G) -> logits (B,K,4E,4E)."""
        sparse = embedding.new_zeros((1, 0, embedding.shape[1]))
        outputs, image_tokens = run_two_way_transformer(self, embedding, positional, self.queries.weight, sparse,
                                                        dense)
        masks = self.num_groups * self.num_classes
        shared = len(self.hypernetworks) == 1 and masks > 1
        hypernetworks = [self.hypernetworks[0]] * masks if shared else list(self.hypernetworks)
        logits = hypernetwork_masks(outputs[:, :masks], upscale_image_tokens(self, image_tokens), hypernetworks)
        logits = logits.view(logits.shape[0], self.num_groups, self.num_classes, *logits.shape[-2:])
        return torch.einsum("bg,bgkhw->bkhw", weights.to(logits.dtype), logits)
