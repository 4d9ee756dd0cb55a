"""The ``sam`` baseline on the tiny variants: per-class decoder, trainable set, LoRA, loss, batching."""

from __future__ import annotations

import copy

import pytest
import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.sam_decoding import (
    box_prompts,
    decode_masks,
    hypernetwork_masks,
    no_prompt,
    per_class_mask_decoder,
    point_prompts,
    run_two_way_transformer,
    sam_output_tokens,
    upscale_image_tokens,
    whole_image_boxes,
)
from samdg.models.methods import build_method
from samdg.models.methods.lora import LoRALinear
from samdg.models.methods.losses import dice_bce_loss

SPEC = LabelSpec.from_dataset_json({"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "lesion": 4, "cyst": 5})


@pytest.fixture(scope="module")
def tiny_sam():
    torch.manual_seed(0)
    return build_sam("tiny_tinyvit_test")


def test_per_class_decoder_starts_from_the_pretrained_mask_heads(tiny_sam):
    pretrained = tiny_sam.mask_decoder
    decoder = per_class_mask_decoder(pretrained, 6)
    assert decoder.num_mask_tokens == 6 and decoder.transformer is pretrained.transformer
    for k in range(6):
        source = k % pretrained.num_mask_tokens
        assert torch.equal(decoder.mask_tokens.weight[k], pretrained.mask_tokens.weight[source])
        for mine, theirs in zip(decoder.output_hypernetworks_mlps[k].parameters(),
                                pretrained.output_hypernetworks_mlps[source].parameters()):
            assert torch.equal(mine, theirs) and mine is not theirs
    last, pretrained_last = decoder.iou_prediction_head.layers[-1], pretrained.iou_prediction_head.layers[-1]
    assert torch.equal(last.weight[5], pretrained_last.weight[1])
    assert pretrained.num_mask_tokens == 4  # the pretrained decoder is left as it was


def test_k_per_class_logits_and_batch_independence(tiny_sam):
    method = build_method("sam", copy.deepcopy(tiny_sam), {}, SPEC).eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        logits = method.predict(images)
        alone = torch.cat([method.predict(images[i:i + 1]) for i in range(3)])
        features = method.encode(images)
        from_features = method.predict(images, features)
    assert logits.shape == (3, 5, 64, 64)  # (B, K, 4E, 4E): five classes, E = 16
    torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_features, logits)
    assert method.cacheable_features() == ()


def test_only_the_decoder_trains_and_gradients_reach_it(tiny_sam):
    method = build_method("sam", copy.deepcopy(tiny_sam), {}, SPEC)
    method.requires_grad_(False)
    for parameter in method.trainable_parameters():
        parameter.requires_grad_(True)
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("mask_decoder.") for name in trainable)
    assert not any("iou_prediction_head" in name for name in trainable)  # no prompt, nothing to score
    method.train()
    assert not method.image_encoder.training and not method.prompt_encoder.training
    batch = {"image": torch.rand(2, 3, 64, 64), "target": torch.randint(0, 6, (2, 64, 64))}
    loss, parts = method.loss(method(batch), batch)
    loss.backward()
    assert set(parts) == {"dice_loss", "bce"}
    assert all(p.grad is not None for n, p in method.named_parameters() if n in trainable and "transformer" in n)
    assert all(p.grad is None for p in method.image_encoder.parameters())


def test_decode_masks_is_the_stock_decoder_for_every_batch_layout(tiny_sam):
    decoder, prompt_encoder = tiny_sam.mask_decoder, tiny_sam.prompt_encoder
    positional = prompt_encoder.get_dense_pe()
    embeddings = torch.randn(3, 256, 16, 16)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [5.0, 9.0, 60.0, 40.0], [20.0, 20.0, 63.0, 63.0]])
    with torch.no_grad():
        # three images, no prompt (sam, dapsam): stock predict_masks image by image
        sparse, dense = no_prompt(prompt_encoder)
        masks, iou = decode_masks(decoder, embeddings, positional, sparse, dense)
        for i in range(3):
            expected, expected_iou = decoder.predict_masks(embeddings[i : i + 1], positional, sparse, dense)
            torch.testing.assert_close(masks[i : i + 1], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], expected_iou, rtol=1e-5, atol=1e-5)
        # one image, three box prompts (segment-anything's own layout)
        sparse, dense = box_prompts(prompt_encoder, boxes)
        masks, iou = decode_masks(decoder, embeddings[:1], positional, sparse, dense)
        expected, expected_iou = decoder.predict_masks(embeddings[:1], positional, sparse, dense.expand(3, -1, -1, -1))
        torch.testing.assert_close(masks, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(iou, expected_iou, rtol=1e-5, atol=1e-5)
        # one point per image (DeSAM's training layout); points are positive unless labelled otherwise
        coords = torch.tensor([[3.0, 5.0], [40.0, 12.0], [60.0, 60.0]])
        sparse, dense = point_prompts(prompt_encoder, coords)
        manual, _ = prompt_encoder(points=(coords[:, None], torch.ones(3, 1)), boxes=None, masks=None)
        torch.testing.assert_close(sparse, manual)
        assert decode_masks(decoder, embeddings, positional, sparse, dense)[0].shape == (3, 4, 64, 64)
    assert torch.equal(whole_image_boxes(2, 64), torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2))
    with pytest.raises(ValueError, match="batch sizes"):
        decode_masks(decoder, embeddings, positional, sparse[:2], dense)


def test_any_queries_without_an_iou_token_and_a_shared_hypernetwork(tiny_sam):
    # ESP-MedSAM's query decoder: Q learned queries, no IoU token, one hypernetwork MLP shared by the queries.
    decoder, prompt_encoder = tiny_sam.mask_decoder, tiny_sam.prompt_encoder
    queries = torch.nn.Embedding(7, 256)
    embeddings = torch.randn(2, 256, 16, 16)
    sparse, dense = no_prompt(prompt_encoder)
    with torch.no_grad():
        outputs, image_tokens = run_two_way_transformer(decoder, embeddings, prompt_encoder.get_dense_pe(),
                                                        queries.weight, sparse, dense)
        shared = decoder.output_hypernetworks_mlps[0]
        masks = hypernetwork_masks(outputs[:, :6], upscale_image_tokens(decoder, image_tokens), [shared] * 6)
        alone, _ = run_two_way_transformer(decoder, embeddings[1:], prompt_encoder.get_dense_pe(), queries.weight,
                                           sparse, dense)
    assert outputs.shape == (2, 7, 256) and image_tokens.shape == (2, 256, 16, 16)
    assert masks.shape == (2, 6, 64, 64)
    torch.testing.assert_close(alone, outputs[1:], rtol=1e-5, atol=1e-5)  # each image decoded on its own
    assert sam_output_tokens(decoder, iou_token=False).shape == (4, 256)


@pytest.mark.parametrize("variant", ["tiny_vit_test", "tiny_tinyvit_test"])
def test_lora_starts_as_the_frozen_model_and_trains_only_its_factors(variant):
    torch.manual_seed(1)
    sam = build_sam(variant)
    plain = build_method("sam", copy.deepcopy(sam), {}, SPEC).eval()
    adapted = build_method("sam", sam, {"lora_rank": 2}, SPEC).eval()
    attention = adapted.image_encoder.attention_modules()
    assert attention and all(isinstance(module.qkv, LoRALinear) for _, module in attention)
    size = sam.config.input_size
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(adapted.predict(images), plain.predict(images))
    assert adapted.cacheable_features() is None  # the encoder output changes with training
    lora = [p for n, p in adapted.named_parameters() if "lora_" in n]
    trainable_ids = {id(p) for p in adapted.trainable_parameters()}
    assert len(lora) == 2 * len(attention) and all(id(p) in trainable_ids for p in lora)
    adapted.requires_grad_(False)
    for parameter in adapted.trainable_parameters():
        parameter.requires_grad_(True)
    adapted.train()
    batch = {"image": images, "target": torch.randint(0, 6, (2, size, size))}
    adapted.loss(adapted(batch), batch)[0].backward()
    lora_b = [p for n, p in adapted.named_parameters() if n.endswith("lora_b")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in adapted.image_encoder.named_parameters() if "lora_" not in n)


def test_loss_ignores_the_ignore_label_and_vanishes_for_a_perfect_prediction():
    spec = LabelSpec.from_dataset_json({"background": 0, "a": 1, "b": 2, "ignore": 3})
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[0, 2:8, 2:8] = 1
    target[1, 8:14, 3:9] = 2
    target[:, 0, :] = 3
    perfect = torch.stack([(target == 1), (target == 2)], dim=1).float() * 40 - 20
    loss, parts = dice_bce_loss(perfect, target, spec)
    assert float(loss) < 1e-3 and parts["bce"] < 1e-6
    garbled = perfect.clone()
    garbled[:, :, 0, :] = 20.0  # confident nonsense on ignored pixels only
    assert torch.allclose(dice_bce_loss(garbled, target, spec)[0], loss)
    # Low-resolution logits are upsampled to the target before the loss.
    low = torch.nn.functional.avg_pool2d(perfect, 2)
    assert dice_bce_loss(low, target, spec)[0].shape == ()
