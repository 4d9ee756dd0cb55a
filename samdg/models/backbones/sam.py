"""SamModel: a samdg backbone + segment-anything's PromptEncoder and MaskDecoder; ``build_sam`` builds it by name.

The state_dict keys are those of the official checkpoints (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``), so a checkpoint loads into the whole model at once.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from samdg.models.backbones.base import Backbone
from samdg.models.backbones.checkpoints import load_state, read_checkpoint
from samdg.models.backbones.registry import VariantConfig, get_family, get_variant
from samdg.models.layers.sam_decoding import decode_masks


def build_backbone(config: VariantConfig) -> Backbone:
    """A randomly initialised image encoder of ``config``'s family (``@register_family``) and numbers."""
    return get_family(config.family)(config)


class SamModel(nn.Module):
    """Image encoder (a :class:`Backbone`), prompt encoder and mask decoder of one variant.

    Boxes (B,4) and point coordinates (B,N,2) are in input pixels (0..S), as segment-anything expects after its
    resize. The low-resolution logits are (B,M,4E,4E) (256x256 at the default sizes); M = 1, or 3 with
    ``multimask_output``.
    """

    def __init__(self, config: VariantConfig, image_encoder: Backbone, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.checkpoint_path: Optional[str] = None

    @classmethod
    def from_config(cls, config: VariantConfig) -> "SamModel":
        """Randomly initialised modules with ``config``'s numbers."""
        decoder, dim, size = config.decoder, config.embedding_dim, config.embedding_size
        prompt_encoder = PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(size, size),
            input_image_size=(config.input_size, config.input_size),
            mask_in_chans=decoder.mask_in_chans,
        )
        mask_decoder = MaskDecoder(
            num_multimask_outputs=decoder.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=decoder.transformer_depth,
                embedding_dim=dim,
                mlp_dim=decoder.transformer_mlp_dim,
                num_heads=decoder.transformer_num_heads,
            ),
            transformer_dim=dim,
            iou_head_depth=decoder.iou_head_depth,
            iou_head_hidden_dim=decoder.iou_head_hidden_dim,
        )
        return cls(config, build_backbone(config), prompt_encoder, mask_decoder)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> (B,256,E,E)."""
        return self.image_encoder(images)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        boxes: Optional[torch.Tensor] = None,
        points: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt set per image: embeddings (B,256,E,E) -> (logits (B,M,4E,4E), predicted IoU (B,M)).

        ``points`` = (coords (B,N,2), labels (B,N)); ``mask_inputs`` (B,1,4E,4E) logits; no prompt at all gives
        the "no prompt" embeddings for every image. One embedding with P prompt sets gives P results (SAM's use).
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        batch, prompts = image_embeddings.shape[0], sparse.shape[0]
        if prompts != batch and 1 not in (prompts, batch):
            raise ValueError(f"{prompts} prompt sets for {batch} image embeddings")
        logits, iou = decode_masks(self.mask_decoder, image_embeddings, self.prompt_encoder.get_dense_pe(), sparse,
                                   dense)
        chosen = slice(1, None) if multimask_output else slice(0, 1)  # segment-anything's token choice
        return logits[:, chosen], iou[:, chosen]

    def forward(
        self,
        images: torch.Tensor,
        boxes: Optional[torch.Tensor] = None,
        points: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,S,S) in [0,1] + prompts -> (low-resolution logits (B,M,4E,4E), predicted IoU (B,M))."""
        return self.decode(self.encode(images), boxes, points, mask_inputs, multimask_output)


def build_sam(
    variant_name: str,
    checkpoint: str | os.PathLike | None = None,
    input_size: int | None = None,
    pretrained: bool = True,
) -> SamModel:
    """Build variant ``variant_name`` (in eval mode), with its pretrained weights unless ``pretrained=False``.

    ``checkpoint`` overrides where the weights come from (and also loads weights into variants that have none,
    e.g. the tiny test variants); ``pretrained=False`` loads nothing at all (random initialisation, e.g. before a
    full trained state_dict is loaded). ``input_size`` runs the variant at another size, adapting the weights.
    Missing or corrupt weights raise ``SamdgError`` naming the file and where to get it.
    """
    config = get_variant(variant_name, input_size=input_size)
    weights = None
    if pretrained and (checkpoint is not None or config.has_pretrained_weights):
        weights = read_checkpoint(config, checkpoint)
    model = SamModel.from_config(config)
    if weights is not None:
        path, state = weights
        load_state(model, state, path, config)
        model.checkpoint_path = str(path)
    return model.eval()
