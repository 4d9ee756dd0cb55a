"""ESP-MedSAM: module shapes, the SPPG patch target and prompt, controller selection per image, the released-bug
options and the released configuration's parameter count (the contract test covers the rest automatically)."""

from __future__ import annotations

import pytest
import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.esp_controller import WEIGHTS_KEY, ControllerPrompt, ExpertMLPs
from samdg.models.layers.esp_qdmd import QueryDecoupledDecoder
from samdg.models.layers.esp_sppg import SelfPatchPromptGenerator, patch_targets
from samdg.models.methods import build_method, resolve_settings
from samdg.models.methods.espmedsam import ESPMedSAM
from samdg.models.params import count_parameters

SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
ONE_CLASS = LabelSpec.from_dataset_json({"background": 0, "lesion": 1})
# The released model (counted in its own code): 12,789,587 parameters, of which 321,640 are TinyViT's unused
# ImageNet classifier (norm_head + head), which samdg does not build.
RELEASED_TOTAL, RELEASED_DEAD_HEAD = 12_789_587, 321_640
RELEASED = {"controller_key": "domain", "controllers": [f"modality{i}" for i in range(6)],
            "encoder_ignores_controller": True, "shared_hypernetwork": True, "attention_only_query": True}


def build(settings=None, variant="tiny_tinyvit_test", spec=SPEC):
    torch.manual_seed(0)
    return build_method("espmedsam", build_sam(variant, pretrained=False), settings or {}, spec)


def test_controller_modules_give_one_set_per_image():
    prompt = ControllerPrompt(num_heads=4, head_dim=8, num_controllers=3)
    weights = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    tokens = prompt({WEIGHTS_KEY: weights, "images": torch.zeros(2, 3, 8, 8)})
    assert tokens.key.shape == (2, 4, 1, 8) and tokens.value is tokens.key and tokens.logit_bias.shape == (1, 1)
    assert torch.equal(tokens.key[0], prompt.tokens[0]) and torch.equal(tokens.key[1], prompt.tokens[2])

    experts = ExpertMLPs(dim=16, num_controllers=3)
    normed = torch.randn(2, 5, 5, 16)
    out = experts(normed, {WEIGHTS_KEY: weights})
    assert out.shape == normed.shape
    assert torch.allclose(out[1], experts.experts[2](normed[1]), atol=1e-6)


def test_sppg_shapes_threshold_and_detached_prompt():
    sppg = SelfPatchPromptGenerator(num_classes=2, embedding_dim=32, hidden=8)
    embedding = torch.randn(3, 32, 8, 8)
    patch_logits, dense = sppg(embedding)
    assert patch_logits.shape == (3, 2, 4, 4) and dense.shape == (3, 32, 8, 8)
    dense.sum().backward()  # the prompt comes from the thresholded, detached logits
    assert all(p.grad is None for p in sppg.patch_decoder.parameters())
    # The prompt is the prompter applied to the thresholded map, upsampled by nearest neighbour.
    with torch.no_grad():
        binary = (torch.sigmoid(patch_logits) >= 0.5).float()
        expected = sppg.dense_prompter(binary.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert torch.allclose(dense, expected)


def test_patch_target_is_the_max_pool_per_class():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 0, 5] = 1  # one pixel of class 1 in patch (0, 1)
    target[0, 6:8, 0:2] = 2  # class 2 fills patch (1, 0)
    patches = patch_targets(target, SPEC, (2, 2))
    assert patches.shape == (1, 2, 2, 2)
    assert patches[0, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert patches[0, 1].tolist() == [[0.0, 0.0], [1.0, 0.0]]


def test_qdmd_shapes_and_hypernetwork_layouts():
    decoder = build_sam("tiny_vit_test", pretrained=False).mask_decoder
    paper = QueryDecoupledDecoder(decoder, num_groups=3, num_classes=2, shared_hypernetwork=False,
                                  attention_only_query=False)
    released = QueryDecoupledDecoder(decoder, num_groups=6, num_classes=1, shared_hypernetwork=True,
                                     attention_only_query=True)
    assert paper.queries.weight.shape[0] == 6 and len(paper.hypernetworks) == 6
    assert released.queries.weight.shape[0] == 7 and len(released.hypernetworks) == 1
    embedding, positional = torch.randn(2, 256, 8, 8), torch.randn(1, 256, 8, 8)
    logits = paper(embedding, torch.zeros_like(embedding), positional, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert logits.shape == (2, 2, 32, 32)
    # Group weights mix the groups' masks: uniform weights give the mean of the one-hot outputs.
    one_hot = [paper(embedding, torch.zeros_like(embedding), positional, torch.eye(3)[g].expand(2, 3))
               for g in range(3)]
    mean = paper(embedding, torch.zeros_like(embedding), positional, torch.full((2, 3), 1 / 3))
    assert torch.allclose(mean, sum(one_hot) / 3, atol=1e-5)


def test_each_image_gets_its_domains_controller_and_unseen_domains_the_mean():
    method = build({"controller_key": "domain", "controllers": ["a", "b"]}).eval()
    image = torch.rand(1, 3, 64, 64)
    images = image.expand(3, -1, -1, -1)
    with torch.no_grad():
        for prompt in (m for m in method.controller_modules if isinstance(m, ControllerPrompt)):
            prompt.tokens[1].mul_(5.0)  # make controller "b" differ clearly
        out = method.encode(images, ["a", "b", "unseen"])["embedding"]
        alone_a = method.encode(image, ["a"])["embedding"]
        predicted = method.predict(image)
        mean_rule = method.decode(method.encode(image, ["unseen"]))
    assert torch.allclose(out[0], alone_a[0], atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    assert not torch.allclose(out[2], out[0], atol=1e-3) and not torch.allclose(out[2], out[1], atol=1e-3)
    assert torch.allclose(predicted, mean_rule, atol=1e-5)  # prediction passes no domain: the unseen rule
    weights = method.controller_weights(["b", "x"], 2, torch.device("cpu"))
    assert weights.tolist() == [[0.0, 1.0], [0.5, 0.5]]
    first = build({"controller_key": "domain", "controllers": ["a", "b"], "unseen_controller": "first"})
    assert first.controller_weights(["x"], 1, torch.device("cpu")).tolist() == [[1.0, 0.0]]


def test_training_fills_the_controllers_from_the_data():
    class Plans:
        modalities = ["CT"]

    settings = resolve_settings("espmedsam", {"controller_key": "domain"})
    assert ESPMedSAM.settings_for_training(settings, ["siteB", "siteA"], Plans).controllers == ["siteA", "siteB"]
    by_modality = resolve_settings("espmedsam", {})
    assert ESPMedSAM.settings_for_training(by_modality, ["siteA"], Plans).controllers == ["CT"]
    given = resolve_settings("espmedsam", {"controller_key": "domain", "controllers": ["x"]})
    assert ESPMedSAM.settings_for_training(given, ["siteA"], Plans).controllers == ["x"]


def test_released_bug_options():
    images = torch.rand(2, 3, 64, 64)
    fixed, bugged = build(), build({"std_equals_mean": True})
    assert torch.equal(fixed.encoder_input(images), images)
    assert torch.allclose(bugged.encoder_input(images)[:, 0], (images[:, 0] * 255 - 123.675) / 123.675)
    ignored = build({"controller_key": "domain", "controllers": ["a", "b"], "encoder_ignores_controller": True})
    assert all(m.tokens.shape[0] == 1 for m in ignored.controller_modules if isinstance(m, ControllerPrompt))
    assert ignored.decoder.num_groups == 2


def test_mask_only_flip_flips_some_training_masks():
    method = build({"mask_only_flip": True}, spec=ONE_CLASS).train()
    target = torch.zeros(64, 64, 64, dtype=torch.long)
    target[:, :, :8] = 1  # left stripe: a flipped mask has it on the right
    logits = torch.full((64, 1, 64, 64), -20.0)
    logits[..., :8] = 20.0
    outputs = {"logits": logits, "patch_logits": torch.zeros(64, 1, 8, 8)}
    torch.manual_seed(0)
    _, parts = method.loss(outputs, {"target": target})
    assert parts["dice_loss"] > 0.01  # some masks no longer match the (unflipped) prediction
    _, parts_eval = method.eval().loss(outputs, {"target": target})
    assert parts_eval["dice_loss"] < 1e-3


def test_distill_stage_trains_only_the_controllers_against_a_frozen_teacher():
    method = build({"stage": "distill"})
    trainable = {id(p) for p in method.trainable_parameters()}
    controller = {id(p) for m in method.controller_modules for p in m.parameters()}
    assert trainable == controller
    teacher = method.teacher_modules()["teacher"]
    assert all(attention.kv_prompt is None for _, attention in teacher.encoder.attention_modules())
    assert not any(name.startswith("teacher") for name in method.state_dict())
    setup = method.configure_optimizers(10)
    assert isinstance(setup.optimizer, torch.optim.Adam) and setup.interval == "epoch"
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert setup.scheduler.gamma == pytest.approx(0.98)


def test_released_configuration_has_the_released_parameter_count():
    """MobileSAM's TinyViT at 1024 px, one encoder controller, six modality queries + the attention-only one,
    one shared hypernetwork, one class."""
    method = build(RELEASED, variant="mobilesam", spec=ONE_CLASS)
    assert method.decoder.queries.weight.shape[0] == 7
    counted = count_parameters(method) + RELEASED_DEAD_HEAD
    assert abs(counted - RELEASED_TOTAL) <= 0.01 * RELEASED_TOTAL
    assert counted == RELEASED_TOTAL
    assert sum(count_parameters(m) for m in method.controller_modules) == 3_144_202


def test_gradient_checkpointing_gives_the_same_controller_gradients():
    images = torch.rand(2, 3, 64, 64)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 8:30, 10:40] = 1
    batch = {"image": images, "target": target, "domain": ["a", "a"]}
    gradients = []
    for checkpointing in (False, True):
        method = build({"gradient_checkpointing": checkpointing}).train()
        method.loss(method(batch), batch)[0].backward()
        gradients.append([p.grad.clone() for m in method.controller_modules for p in m.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))
