"""The method contract, checked for every registered method on every tiny test variant (timm's test_models habit).

A new method (``@register_method``) or test variant (a registered variant whose name ends in ``_test``) is covered
here without anyone writing a test for it: build; one optimiser step through the trainer's own functions moves
only the declared trainable parameters (frozen weights and batch-norm statistics bit-identical) and gives every
trainable parameter a gradient (DDP's precondition); ``train()`` keeps frozen modules in eval and trainable ones in
train mode; ``predict`` returns (B,K,h,w); a saved state_dict rebuilds the same model; a frozen encoder's cached
fp16 features give the loss of a fresh encoder pass.
"""

from __future__ import annotations

import io

import pytest
import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam, get_variant, list_variants
from samdg.models.methods import build_method, list_methods
from samdg.training.checkpoint import build_untrained, load_model_state
from samdg.training.optim import configure_optimization, optimizer_step, prepare_for_training

TEST_VARIANTS = [name for name in list_variants() if name.endswith("_test")]
SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
CASES = [(method, variant) for method in list_methods() for variant in TEST_VARIANTS]


def make_batch(size: int, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(3)
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, size // 8 : size // 2, size // 8 : size // 2] = 1
    target[0, size // 2 : 7 * size // 8, size // 2 : 7 * size // 8] = 2
    images = torch.rand(batch, 3, size, size, generator=generator) * 0.3 + 0.5 * (target > 0).float()[:, None]
    return {"image": images, "target": target, "domain": ["a"] * batch,
            "keys": [f"case:{i}" for i in range(batch)]}


def build(method_name: str, variant: str):
    torch.manual_seed(0)
    return build_method(method_name, build_sam(variant, pretrained=False), None, SPEC)


def loss_of(method, batch: dict) -> torch.Tensor:
    torch.manual_seed(11)  # in-method randomness (e.g. DeSAM's training points) is the same for both calls
    loss, parts = method.loss(method(batch), batch)
    assert all(isinstance(value, float) for value in parts.values())
    return loss


def modules_inside(modules) -> set[int]:
    return {id(sub) for module in modules for sub in module.modules()}


@pytest.mark.parametrize("method_name, variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_method_contract(method_name, variant):
    method = build(method_name, variant)
    size = get_variant(variant).input_size
    batch = make_batch(size)

    # --- what trains is exactly what is declared ---------------------------------------------------------------
    trainable = prepare_for_training(method, torch.device("cpu"))
    trainable_ids = {id(p) for p in trainable}
    assert trainable and len(trainable_ids) == len(trainable)
    assert {id(p) for p in method.parameters() if p.requires_grad} == trainable_ids
    names = {id(p): name for name, p in method.named_parameters()}
    assert trainable_ids <= set(names), "a trainable parameter is not part of the method (saved nowhere)"

    method.train()
    inside_trainable = modules_inside(method.trainable_modules())
    assert all(sub.training for module in method.trainable_modules() for sub in module.modules())
    for frozen in method.frozen_modules():
        assert not any(sub.training for sub in frozen.modules() if id(sub) not in inside_trainable)
    assert not any(teacher.training for teacher in method.teacher_modules().values())

    # --- one step through the trainer's own functions ---------------------------------------------------------
    before = {key: value.clone() for key, value in method.state_dict().items()}
    setup = configure_optimization(method, total_steps=10)
    setup.optimizer.zero_grad(set_to_none=True)
    loss_of(method, batch).backward()
    unused = [names[id(p)] for p in trainable if p.grad is None]
    assert unused == [] or method.ddp_find_unused_parameters(), f"trainable parameters without a gradient: {unused}"
    assert all(p.grad is None for p in method.parameters() if id(p) not in trainable_ids)
    optimizer_step(setup, torch.amp.GradScaler("cpu", enabled=False))

    owners = dict(method.named_modules())
    trainable_names = {names[i] for i in trainable_ids}
    moved = []
    for key, value in method.state_dict().items():
        if key in trainable_names:
            moved.append(not torch.equal(value, before[key]))
            continue
        owner = owners[key.rpartition(".")[0]]
        if key not in dict(method.named_parameters()) and owner.training:
            continue  # a buffer of a module that trains (e.g. its own batch-norm statistics)
        assert torch.equal(value, before[key]), f"{key} changed but is frozen"
    assert any(moved)

    # --- automatic prediction, and a state_dict that rebuilds the same model ----------------------------------
    method.eval()
    with torch.no_grad():
        logits = method.predict(batch["image"])
    assert logits.ndim == 4 and logits.shape[:2] == (2, SPEC.num_classes) and torch.isfinite(logits).all()
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = {"model_state": torch.load(buffer, weights_only=True), "method": method_name, "variant": variant}
    rebuilt = build_untrained(method_name, variant, size, method.settings, SPEC, pretrained=False)
    load_model_state(rebuilt, state, "checkpoint")  # what the predictor does: every key must fit
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().predict(batch["image"]), logits)


@pytest.mark.parametrize("method_name, variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_cached_fp16_features_give_the_loss_of_a_fresh_encoder_pass(method_name, variant):
    method = build(method_name, variant)
    batch = make_batch(get_variant(variant).input_size)
    method.train()
    if method.cacheable_features() is None:  # the encoder trains: its output must carry a gradient, never cached
        assert method.encode(batch["image"])["embedding"].requires_grad
        return
    with torch.no_grad():
        fresh = loss_of(method, batch)
        features = method.encode(batch["image"])
        assert set(features) == {"embedding", *method.cacheable_features()}
        cached = loss_of(method, {**batch, "features": {k: v.half() for k, v in features.items()}})  # as stored
    torch.testing.assert_close(cached, fresh, rtol=1e-2, atol=1e-3)


class DroppedExpert(torch.nn.Module):
    """A parallel MLP with dropout, as DB-SAM's and ESP-MedSAM's injected modules have: (B,H,W,C) -> (B,H,W,C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(dim, dim)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, xn: torch.Tensor, context: dict) -> torch.Tensor:
        return self.dropout(self.fc(xn))


@pytest.mark.parametrize("variant", TEST_VARIANTS)
def test_modules_injected_into_a_frozen_encoder_keep_their_dropout_in_training(variant):
    from samdg.models.methods.sam import SamBaseline

    class WithExperts(SamBaseline):
        def __init__(self, sam, settings, label_spec):
            super().__init__(sam, settings, label_spec)
            for _, block in self.image_encoder.transformer_blocks():
                block.parallel_mlp = DroppedExpert(block.attn.qkv.in_features)

        def experts(self):
            return [block.parallel_mlp for _, block in self.image_encoder.transformer_blocks()]

        def trainable_modules(self):
            return [*super().trainable_modules(), *self.experts()]

    torch.manual_seed(0)
    method = WithExperts(build_sam(variant, pretrained=False), None, SPEC).train()
    assert all(expert.dropout.training for expert in method.experts())
    assert not method.image_encoder.training and not method.prompt_encoder.training
    images = make_batch(get_variant(variant).input_size)["image"]
    assert not torch.equal(method.encode(images)["embedding"], method.encode(images)["embedding"])  # dropout on
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.encode(images)["embedding"], method.encode(images)["embedding"])
