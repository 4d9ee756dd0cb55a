"""Per-class box prompts: boxes from label maps, DB-SAM's jitter, prompted decoding, `dbsam` with `prompt: box`."""

from __future__ import annotations

import math

import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.box_prompts import EMPTY_LOGIT, box_prompted_logits, boxes_from_label_map, jitter_boxes
from samdg.models.layers.sam_decoding import box_prompts, decode_masks
from samdg.models.methods import build_method

SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})


def label_maps(size: int = 128) -> torch.Tensor:
    target = torch.zeros(2, size, size, dtype=torch.long)
    target[0, 10:20, 30:50] = 1  # rows 10-19, columns 30-49
    target[0, 60:61, 5:6] = 2  # one pixel
    target[1, 40:90, 0:128] = 1  # image 1 has no lesion
    return target


def test_boxes_from_label_map_are_tight_pixel_edges_and_nan_when_absent():
    boxes = boxes_from_label_map(label_maps(), SPEC)
    assert boxes.shape == (2, 2, 4)
    assert boxes[0, 0].tolist() == [30, 10, 50, 20]
    assert boxes[0, 1].tolist() == [5, 60, 6, 61]
    assert boxes[1, 0].tolist() == [0, 40, 128, 90]
    assert boxes[1, 1].isnan().all()


def test_jitter_moves_every_side_outwards_by_less_than_20_px_at_256_and_stays_in_the_image():
    boxes = boxes_from_label_map(label_maps(), SPEC)
    generator = torch.Generator().manual_seed(0)
    moved = torch.stack([jitter_boxes(boxes, 128, generator=generator) for _ in range(50)])
    present = ~boxes.isnan().any(-1)
    growth = (moved - boxes) * torch.tensor([-1.0, -1.0, 1.0, 1.0])  # outwards is positive
    assert (growth[:, present] >= -1e-6).all() and (growth[:, present] <= 19 * 128 / 256 + 1e-6).all()
    assert growth[:, 0, 0].max() > 0  # it does move
    assert moved[:, present].min() >= 0 and moved[:, present].max() <= 128
    assert moved[:, ~present].isnan().all()


def make_dbsam(**settings):
    torch.manual_seed(0)
    method = build_method("dbsam", build_sam("tiny_vit_test", pretrained=False), settings, SPEC)
    method.freeze_all_but_trainable()
    return method


def test_each_box_prompts_its_own_class_token_and_a_missing_box_is_empty():
    method = make_dbsam().eval()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    boxes = boxes_from_label_map(label_maps(), SPEC)
    with torch.no_grad():
        embedding = method.encode(images)["embedding"]
        logits = box_prompted_logits(method.mask_decoder, method.prompt_encoder, embedding, boxes)
        sparse, dense = box_prompts(method.prompt_encoder, boxes[0, 1][None])
        alone, _ = decode_masks(method.mask_decoder, embedding[:1], method.prompt_encoder.get_dense_pe(), sparse,
                                dense)
    assert logits.shape == (2, 2, 32, 32)
    torch.testing.assert_close(logits[0, 1], alone[0, 1])  # image 0, lesion: its box, token 1
    assert (logits[1, 1] == EMPTY_LOGIT).all()


def test_box_prompt_training_step_and_prompted_prediction():
    from samdg.training.optim import configure_optimization

    method = make_dbsam(prompt="box")
    assert method.ddp_find_unused_parameters()
    target = label_maps()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    setup = configure_optimization(method, total_steps=4)
    method.train()
    outputs = method({"image": images, "target": target})
    assert (outputs["logits"][1, 1] == EMPTY_LOGIT).all()  # no lesion in image 1: no box, empty
    loss, _ = method.loss(outputs, {"target": target})
    loss.backward()
    assert method.mask_decoder.output_hypernetworks_mlps[1].layers[0].weight.grad is not None
    setup.optimizer.step()

    empty = torch.zeros_like(target)  # a batch without foreground still trains (no box, nothing to decode)
    loss, _ = method.loss(method({"image": images, "target": empty}), {"target": empty})
    loss.backward()
    assert math.isfinite(float(loss.detach()))

    method.eval()
    boxes = torch.full((2, 2, 4), float("nan"))
    boxes[0, 0] = torch.tensor([10.0, 10.0, 60.0, 60.0])
    with torch.no_grad():
        prompted = method.predict_with_boxes(images, boxes)
        automatic = method.predict(images)  # every class prompted by the whole image
    assert prompted.shape == automatic.shape == (2, 2, 32, 32)
    assert (prompted[1] == EMPTY_LOGIT).all() and not (prompted[0, 0] == EMPTY_LOGIT).all()
    assert not (automatic == EMPTY_LOGIT).any()
