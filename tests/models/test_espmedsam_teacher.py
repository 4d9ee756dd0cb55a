"""ESP-MedSAM's teachers: the `teacher` stage builds the medical teacher on the teacher variant's SAM; the
distillation stage's medical teacher takes that stage's encoder and controllers, encodes each image with its own
controller, and its cached per-controller embeddings give what the uncached teacher gives."""

from __future__ import annotations

import pytest
import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.methods import build_method

SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1})
DOMAINS = {"controller_key": "domain", "controllers": ["siteA", "siteB"], "teacher_variant": "tiny_vit_test"}


def build(stage: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_method("espmedsam", build_sam("tiny_tinyvit_test", pretrained=False), {**DOMAINS, "stage": stage},
                        SPEC)


def test_the_teacher_stage_trains_controllers_and_a_head_on_the_teacher_variant():
    teacher = build("teacher")
    assert teacher.image_encoder.config.name == "tiny_vit_test"
    student_size = build_sam("tiny_tinyvit_test", pretrained=False).config.input_size
    images = torch.rand(2, 3, student_size, student_size)  # the plan's input size: resized to the teacher's
    logits = teacher.predict(images)
    assert logits.shape[:2] == (2, 1)
    trainable = {id(p) for p in teacher.trainable_parameters()}
    assert trainable == {id(p) for m in [*teacher.controller_modules, teacher.sppg, teacher.decoder]
                         for p in m.parameters()}


def test_the_medical_teacher_uses_the_teacher_stage_controllers_per_image(tmp_path):
    trained = build("teacher", seed=1)
    for module in trained.controller_modules:  # trained controllers: each domain's differs
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
    fold_dir = tmp_path / "fold_0"
    (fold_dir / "teacher").mkdir(parents=True)
    torch.save({"method_settings": {**DOMAINS, "stage": "teacher"}, "model_state": trained.state_dict()},
               fold_dir / "teacher" / "checkpoint_final.pth")

    student = build("distill")
    lines = student.load_teachers(fold_dir / "distill")
    assert "medical teacher (tiny_vit_test with its 2 controller(s)" in lines[0]
    teacher = student.teacher_modules()["teacher"]
    assert teacher.is_medical
    for key, value in trained.image_encoder.state_dict().items():
        assert torch.equal(teacher.encoder.state_dict()[key], value), key

    size = student.image_encoder.config.input_size
    images = torch.rand(3, 3, size, size)
    weights = student.controller_weights(["siteA", "siteB", "siteA"], 3, images.device)
    with torch.no_grad():
        direct = student.teacher_embedding(images, weights)
        cached = student.teacher_embedding(images, weights, student.encode_for_cache(images))
        swapped = student.teacher_embedding(images, weights.flip(1))
    grid = student.image_encoder.config.embedding_size
    assert direct.shape == (3, 256, grid, grid)
    assert torch.allclose(cached, direct, atol=1e-5)
    assert not torch.allclose(swapped, direct, atol=1e-3)  # the controller matters
    assert student.cache_identity()["checkpoint"].endswith("checkpoint_final.pth")


def test_a_teacher_stage_for_other_controllers_is_refused(tmp_path):
    trained = build("teacher")
    (tmp_path / "teacher").mkdir()
    torch.save({"method_settings": {**DOMAINS, "controllers": ["x"], "stage": "teacher"},
                "model_state": trained.state_dict()}, tmp_path / "teacher" / "checkpoint_final.pth")
    from samdg.errors import SamdgError

    with pytest.raises(SamdgError, match="trained for controllers"):
        build("distill").load_teachers(tmp_path / "distill")


def test_without_a_teacher_stage_the_distillation_teacher_stays_plain(tmp_path):
    student = build("distill")
    lines = student.load_teachers(tmp_path / "distill")
    assert "no medical teacher" in lines[0] and not student.teacher_modules()["teacher"].is_medical
