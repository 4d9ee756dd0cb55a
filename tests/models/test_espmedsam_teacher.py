"""ESP-MedSAM's teachers: the `teacher` stage builds the medical teacher on the teacher variant's SAM; the
distillation stage's medical teacher takes that stage's encoder and controllers, encodes each image with its own
controller, and its cached per-controller embeddings give what the uncached teacher gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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


def _distill_with_medical_teacher(tmp_path, **settings):
    """A distill-stage student (aggregator training) whose medical teacher holds trained controllers; also returns
    the teacher stage's model."""
    trained = build("teacher", seed=1)
    for module in trained.controller_modules:
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
    (tmp_path / "teacher").mkdir(exist_ok=True)
    torch.save({"method_settings": {**DOMAINS, "stage": "teacher"}, "model_state": trained.state_dict()},
               tmp_path / "teacher" / "checkpoint_final.pth")
    torch.manual_seed(0)
    student = build_method("espmedsam", build_sam("tiny_tinyvit_test", pretrained=False),
                           {**DOMAINS, "stage": "distill", "train_aggregator": True, **settings}, SPEC)
    student.load_teachers(tmp_path / "distill")
    return student, trained


def _plain_encoder(variant: str, state: dict) -> torch.nn.Module:
    """``variant``'s encoder with the encoder weights of ``state`` and no controller slots filled."""
    encoder = build_sam(variant, pretrained=False).image_encoder
    result = encoder.load_state_dict({k: v for k, v in state.items() if "kv_prompt" not in k
                                      and "parallel_mlp" not in k}, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    return encoder.eval()


def test_the_distillation_loss_adds_the_weighted_common_knowledge_term(tmp_path):
    weight = 0.5
    without, _ = _distill_with_medical_teacher(tmp_path, common_knowledge_weight=0.0)
    student, trained = _distill_with_medical_teacher(tmp_path, common_knowledge_weight=weight)
    size = student.image_encoder.config.input_size
    torch.manual_seed(3)
    batch = {"image": torch.rand(2, 3, size, size), "domain": ["siteA", "siteB"],
             "target": torch.zeros(2, size, size, dtype=torch.long)}

    outputs = without(batch)
    loss, parts = without.loss(outputs, batch)
    assert "common_mse" not in parts  # weight 0: the domain-knowledge MSE alone, as before
    assert torch.allclose(loss, F.mse_loss(outputs["embedding"], outputs["teacher_embedding"]))

    outputs = student(batch)
    loss, parts = student.loss(outputs, batch)
    domain = F.mse_loss(outputs["embedding"], outputs["teacher_embedding"])
    # The common-knowledge pair, computed independently: both encoders with their controller slots empty.
    with torch.no_grad():
        student_encoder = {k[len("image_encoder."):]: v for k, v in student.state_dict().items()
                           if k.startswith("image_encoder.")}
        aggregator, _ = _plain_encoder("tiny_tinyvit_test", student_encoder).forward_features(batch["image"])
        teacher_plain, _ = _plain_encoder("tiny_vit_test", trained.image_encoder.state_dict()).forward_features(
            F.interpolate(batch["image"], size=(trained.image_encoder.config.input_size,) * 2, mode="bilinear",
                          align_corners=False))
        grid = student.image_encoder.config.embedding_size
        teacher_plain = F.interpolate(teacher_plain, size=(grid, grid), mode="bilinear", align_corners=False)
    common = F.mse_loss(aggregator, teacher_plain)
    assert common > 0
    assert torch.allclose(loss, domain + weight * common, rtol=1e-4)
    assert parts["common_mse"] == pytest.approx(float(common), rel=1e-4)
    # The pair runs without controllers (no gradient reaches them) and trains the aggregator; the slots are back.
    F.mse_loss(outputs["aggregator_embedding"], outputs["plain_teacher_embedding"]).backward()
    controller_ids = {id(p) for m in student.controller_modules for p in m.parameters()}
    assert all(p.grad is None for m in student.controller_modules for p in m.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.image_encoder.parameters()
               if id(p) not in controller_ids)
    assert all(a.kv_prompt is not None for _, a in student.image_encoder.attention_modules())


def test_the_cache_holds_the_plain_teacher_beside_the_per_controller_embeddings(tmp_path):
    student, _ = _distill_with_medical_teacher(tmp_path)
    assert student.cacheable_features() == ("teacher_plain",)
    size = student.image_encoder.config.input_size
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        cached = student.encode_for_cache(images)
        live = student.common_knowledge_pair(images)["plain_teacher_embedding"]
        from_cache = student.common_knowledge_pair(images, cached)["plain_teacher_embedding"]
    grid = student.image_encoder.config.embedding_size
    shapes = student.cached_feature_shapes({"embedding": (256, grid, grid)})
    assert {name: tuple(t.shape[1:]) for name, t in cached.items()} == shapes
    assert torch.allclose(from_cache, live)
    frozen, _ = _distill_with_medical_teacher(tmp_path, train_aggregator=False)  # the term has nothing to train
    assert frozen.cacheable_features() == () and "teacher_plain" not in frozen.encode_for_cache(images)


def test_a_plain_teacher_runs_once_per_batch_for_both_distillation_terms(monkeypatch):
    torch.manual_seed(0)
    settings = {**DOMAINS, "stage": "distill", "train_aggregator": True}
    student = build_method("espmedsam", build_sam("tiny_tinyvit_test", pretrained=False), settings, SPEC)
    teacher = student.teachers["teacher"]
    assert student.common_knowledge and not teacher.is_medical
    size = student.image_encoder.config.input_size
    images = torch.rand(2, 3, size, size)
    runs = []
    embed = teacher._embed
    monkeypatch.setattr(teacher, "_embed", lambda *args: runs.append(1) or embed(*args))
    outputs = student({"image": images, "domain": ["siteA", "siteB"]})
    assert len(runs) == 1
    with torch.no_grad():
        expected = embed(images, None)
    assert torch.equal(outputs["teacher_embedding"], expected)
    assert torch.equal(outputs["plain_teacher_embedding"], expected)
