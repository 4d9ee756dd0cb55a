"""A third backbone family, written in this file alone, trains one step of every registered method.

The toy family is a conv + plain-attention encoder built on the block protocol (``ConvBlock``,
``TransformerBlock``, a promptable attention) with two stages; its variant is 32 px with an embedding of 4x4.
No method file knows it: what a method needs from a backbone is the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from samdg.labels import LabelSpec
from samdg.models.backbones import (
    Backbone,
    ConvBlock,
    Stage,
    TransformerBlock,
    VariantConfig,
    build_sam,
    register_family,
    register_variant,
    registry,
)
from samdg.models.backbones.attention import PromptableAttention, augmented_attention
from samdg.models.methods import build_method, list_methods

SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})


@dataclass(frozen=True)
class ToySpec:
    """A conv stem of ``patch`` x ``patch`` (stride ``patch``), stage 0 at width ``width``, a 2x2 merge, stage 1 at
    twice the width."""

    width: int = 16
    heads: int = 2
    patch: int = 4

    @property
    def stride(self) -> int:
        return 2 * self.patch


class ToyAttention(PromptableAttention, nn.Module):
    """Global multi-head attention on tokens (B,N,C) -> (B,N,C), with the ``kv_prompt`` slot."""

    def __init__(self, dim: int, heads: int) -> None:
        nn.Module.__init__(self)
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self._init_prompt_slot()

    def forward(self, x: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        extra = self._prompt_tokens(batch, q.dtype, context)
        out = augmented_attention(q, k, v, self.head_dim**-0.5, None, extra)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class ToyAttentionBlock(TransformerBlock):
    """Pre-norm attention + MLP on the block protocol, (B,H,W,C) -> (B,H,W,C)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ToyAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def attention_branch(self, x: torch.Tensor, context: dict) -> torch.Tensor:
        batch, rows, cols, dim = x.shape
        return self.attn(self.norm1(x).reshape(batch, rows * cols, dim), context).reshape(x.shape)

    def mlp_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x)


class ToyConvBlock(ConvBlock):
    """Depthwise 3x3 conv + BatchNorm + pointwise conv, residual; (B,C,H,W) inside."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(torch.relu(self.bn(self.depthwise(x))))


class ToyBackbone(Backbone):
    """(B,3,S,S) -> (B,256,S/8,S/8). Taps: ``stem`` (B,C,S/4,S/4), ``level0`` (B,2C,S/8,S/8), ``level1`` (same)."""

    def __init__(self, config: VariantConfig) -> None:
        super().__init__(config, num_stages=2)
        spec: ToySpec = config.encoder
        width, self.grid = spec.width, config.input_size // spec.patch
        self.patch_embed = nn.Conv2d(3, width, spec.patch, stride=spec.patch)
        self.stage0 = nn.ModuleList([ToyConvBlock(width), ToyAttentionBlock(width, spec.heads)])
        self.merge = nn.Conv2d(width, 2 * width, 2, stride=2)
        self.stage1 = nn.ModuleList([ToyAttentionBlock(2 * width, spec.heads) for _ in range(2)])
        self.neck = nn.Sequential(nn.Conv2d(2 * width, config.embedding_dim, 1), LayerNorm2d(config.embedding_dim))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images)

    def stages(self) -> list[Stage]:
        width, grid, half = self.config.encoder.width, (self.grid, self.grid), (self.grid // 2, self.grid // 2)
        return [
            Stage(0, tuple(self.stage0), width, grid, 2 * width, half, (None, None), "level0", self.merge),
            Stage(1, tuple(self.stage1), 2 * width, half, 2 * width, half, (None, None), "level1"),
        ]


def tiny_toy_test() -> VariantConfig:
    return VariantConfig(name="tiny_toy_test", family="toy", input_size=32, intensity="unit_range", encoder=ToySpec(),
                         default_taps=("stem", "level0", "level1"), description="toy third family (tests)")


@pytest.fixture(scope="module")
def toy_variant():
    """The toy family and its variant, registered for this module only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
        patch.setattr(registry, "_VARIANTS", dict(registry._VARIANTS))
        register_family("toy")(ToyBackbone)
        register_variant("tiny_toy_test")(tiny_toy_test)
        yield "tiny_toy_test"


def _batch(size: int, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(3)
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, 4:16, 6:20] = 1
    target[0, 18:28, 12:26] = 2
    return {"image": torch.rand(batch, 3, size, size, generator=generator), "target": target,
            "domain": ["a"] * batch, "keys": [f"case{i}:0" for i in range(batch)]}


def test_the_toy_family_honours_the_protocol(toy_variant):
    encoder = build_sam(toy_variant).image_encoder
    assert type(encoder).family == "toy" and encoder.config.embedding_size == 4
    assert encoder.feature_shapes() == {"stem": (16, 8, 8), "level0": (32, 4, 4), "level1": (32, 4, 4)}
    with torch.no_grad():
        embedding, taps = encoder.forward_features(torch.rand(2, 3, 32, 32), encoder.tap_names)
    assert embedding.shape == (2, 256, 4, 4)
    assert {name: tuple(t.shape[1:]) for name, t in taps.items()} == encoder.feature_shapes()
    assert len(encoder.transformer_blocks()) == len(encoder.attention_modules()) == 3


@pytest.mark.parametrize("method_name", list_methods())
def test_every_method_trains_one_step_on_the_toy_family(toy_variant, method_name):
    torch.manual_seed(0)
    method = build_method(method_name, build_sam(toy_variant, pretrained=False), {}, SPEC)
    # The trainer's way: exactly the declared parameters train.
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable
    for parameter in method.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    method.train()
    batch = _batch(32)
    loss, _ = method.loss(method(batch), batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {name for name, p in method.named_parameters() if not torch.equal(p.detach(), before[name])}
    frozen = {name for name, p in method.named_parameters() if id(p) not in trainable}
    assert changed, f"{method_name}: no trainable parameter changed"
    assert not changed & frozen, f"{method_name}: frozen parameters changed: {sorted(changed & frozen)[:5]}"
