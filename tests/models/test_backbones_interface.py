"""The backbone interface the methods use: taps, kv-prompt attention, freezing, frozen batch norms, intensity
conventions and the batched prompt decoding of SamModel (slots, hooks and stages: test_backbone_protocol.py)."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import add_decomposed_rel_pos
from torch import nn

from samdg.errors import SamdgError
from samdg.models.backbones import KeyValuePrompt, build_sam
from samdg.models.backbones.attention import RelPosSdpaAttention, TinyViTAttention
from samdg.models.backbones.intensity import SAM_PIXEL_MEAN, SAM_PIXEL_STD, apply_intensity
from samdg.models.params import count_parameters, count_trainable, freeze, trainable_names, unfreeze


def test_taps_have_the_announced_shapes(encoder, make_images):
    images = make_images(encoder)
    with torch.no_grad():
        embedding, features = encoder.forward_features(images, encoder.tap_names)
        plain = encoder(images)
    size = encoder.config.embedding_size
    assert embedding.shape == (2, 256, size, size)
    torch.testing.assert_close(embedding, plain)
    assert list(features) == list(encoder.tap_names)
    for name, shape in encoder.feature_shapes().items():
        assert features[name].shape == (2,) + shape, name
    assert len(encoder.default_taps) == 3 and set(encoder.default_taps) <= set(encoder.tap_names)


def test_tinyvit_stage_taps_follow_litemedsams_layout():
    encoder = build_sam("tiny_tinyvit_test").image_encoder
    assert encoder.feature_shapes() == {
        "stem": (16, 64, 64), "stage0": (24, 32, 32), "stage1": (32, 16, 16), "stage2": (48, 16, 16),
        "stage3": (48, 16, 16),
    }
    assert encoder.tap_names == ("stem", "stage0", "stage1", "stage2", "stage3")


def test_bad_taps_and_image_sizes_are_refused(encoder, make_images):
    with pytest.raises(SamdgError, match="unknown feature tap.*available: stem"):
        encoder.forward_features(make_images(encoder), ("block99",))
    with pytest.raises(ValueError, match="expects images of shape"):
        encoder(torch.rand(1, 3, 32, 32))


def _naive_attention(attention, x, tokens):
    """Materialised reference: logits of the stock formulas plus the prompt columns, softmax, weighted values."""
    if isinstance(attention, RelPosSdpaAttention):
        batch, rows, cols, _ = x.shape
        qkv = attention.qkv(x).reshape(batch, rows * cols, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        logits = (q * attention.scale) @ k.transpose(-2, -1)
        flat = logits.reshape(batch * attention.num_heads, rows * cols, rows * cols)
        flat = add_decomposed_rel_pos(flat, q.reshape(flat.shape[0], rows * cols, -1), attention.rel_pos_h,
                                      attention.rel_pos_w, (rows, cols), (rows, cols))
        logits = flat.view_as(logits)
    else:
        batch, n, _ = x.shape
        qkv = attention.qkv(attention.norm(x)).view(batch, n, attention.num_heads, -1)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split([attention.key_dim] * 2 + [attention.value_dim], dim=3))
        bias = attention.attention_biases[:, attention.attention_bias_idxs]
        logits = q @ k.transpose(-2, -1) * attention.scale + bias
    prompt_bias = tokens.logit_bias.expand(attention.num_heads, -1)[None, :, None, :]
    extra = q @ tokens.key.transpose(-2, -1) * attention.scale + prompt_bias
    weights = torch.cat([logits, extra], dim=-1).softmax(dim=-1)
    out = weights @ torch.cat([v, tokens.value.expand(batch, -1, -1, -1)], dim=2)
    out = out.transpose(1, 2).reshape(*x.shape[:-1], -1)
    return attention.proj(out)


@pytest.mark.parametrize("kind", ["vit_global", "vit_window", "tinyvit"])
def test_kv_prompt_attention_equals_the_materialised_formula(kind):
    torch.manual_seed(3)
    if kind == "tinyvit":
        attention = TinyViTAttention(24, 12, 2, resolution=(4, 4))
        x = torch.randn(3, 16, 24)
    else:
        size = 6 if kind == "vit_global" else 3
        attention = RelPosSdpaAttention(24, num_heads=2, use_rel_pos=True, input_size=(size, size))
        x = torch.randn(3, size, size, 24)
    with torch.no_grad():
        for name, p in attention.named_parameters():
            if "rel_pos" in name or "attention_biases" in name:
                p.normal_()
    prompt = KeyValuePrompt(2, 12, num_tokens=3, logit_bias=True)
    with torch.no_grad():
        prompt.logit_bias.fill_(0.7)
    attention.kv_prompt = prompt
    torch.testing.assert_close(attention(x), _naive_attention(attention, x, prompt()), atol=1e-5, rtol=1e-5)


def test_freeze_unfreeze_and_count_by_pattern():
    model = build_sam("tiny_vit_test")
    total = count_parameters(model)
    assert count_trainable(model) == total
    encoder_size = count_parameters(model.image_encoder)
    assert freeze(model, "image_encoder.*") == len(list(model.image_encoder.parameters()))
    assert count_trainable(model) == total - encoder_size
    unfreeze(model, ["image_encoder.blocks.1.*", "image_encoder.neck.*"])
    names = [n for n in trainable_names(model) if n.startswith("image_encoder.")]
    assert names and all(n.startswith(("image_encoder.blocks.1.", "image_encoder.neck.")) for n in names)
    with pytest.raises(SamdgError, match="no parameter of SamModel matches the pattern 'image_encoder.adapter\\*'"):
        freeze(model, "image_encoder.adapter*")


def test_frozen_batchnorm_keeps_its_running_statistics(make_images):
    encoder = build_sam("tiny_tinyvit_test").image_encoder
    freeze(encoder)
    encoder.train()
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    encoder(make_images(encoder))
    torch.testing.assert_close(norms[0].running_mean, before)
    unfreeze(encoder, "patch_embed.*")
    encoder.train()
    assert norms[0].training


def test_eval_mode_folds_batchnorm_without_changing_the_result(make_images):
    encoder = build_sam("tiny_tinyvit_test").image_encoder
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
        images = make_images(encoder)
        folded = encoder.eval()(images)
        for module in encoder.modules():  # reference: plain conv + BN in eval mode
            if hasattr(module, "bn") and isinstance(module.bn, nn.BatchNorm2d):
                module.bn.eval()
                module.forward = lambda x, m=module: m.bn(m.c(x))
        plain = encoder(images)
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)


def test_intensity_conventions(make_images):
    grey = torch.full((1, 3, 4, 4), 0.5)
    expected = (127.5 - torch.tensor(SAM_PIXEL_MEAN)) / torch.tensor(SAM_PIXEL_STD)
    torch.testing.assert_close(apply_intensity(grey, "sam_meanstd_255")[0, :, 0, 0], expected)
    assert apply_intensity(grey, "unit_range") is grey
    z = apply_intensity(torch.rand(2, 3, 8, 8), "per_image_zscore")
    torch.testing.assert_close(z.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    with pytest.raises(SamdgError, match="unknown intensity convention 'hu'"):
        apply_intensity(grey, "hu")
    encoder = build_sam("tiny_vit_test").image_encoder
    images = make_images(encoder)
    with torch.no_grad():
        sam_style = encoder(images)
        encoder.intensity = "unit_range"
        assert not torch.allclose(encoder(images), sam_style)


def test_decode_gives_each_image_its_own_prompt():
    torch.manual_seed(0)
    model = build_sam("tiny_vit_test")
    embeddings = torch.randn(3, 256, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [10.0, 30.0, 120.0, 90.0], [64.0, 64.0, 127.0, 127.0]])
    with torch.no_grad():
        logits, iou = model.decode(embeddings, boxes=boxes, multimask_output=True)
        assert logits.shape == (3, 3, 32, 32) and iou.shape == (3, 3)
        for i in range(3):  # segment-anything's own path: one image, its prompt
            sparse, dense = model.prompt_encoder(points=None, boxes=boxes[i : i + 1], masks=None)
            expected, expected_iou = model.mask_decoder(embeddings[i : i + 1], model.prompt_encoder.get_dense_pe(),
                                                        sparse, dense, multimask_output=True)
            torch.testing.assert_close(logits[i : i + 1], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], expected_iou, atol=1e-5, rtol=1e-5)
        unprompted, _ = model.decode(embeddings)
        assert unprompted.shape == (3, 1, 32, 32)
        assert not torch.allclose(unprompted[0], unprompted[1])
        single, _ = model.decode(embeddings, boxes=boxes)
        one_image, _ = model.decode(embeddings[:1], boxes=boxes)  # one image, three prompts (SAM's own use)
        assert one_image.shape == (3, 1, 32, 32)
        torch.testing.assert_close(one_image[0], single[0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(one_image[1], single[1])
