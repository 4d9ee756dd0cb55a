"""The block-and-stage protocol, the same for every family: stages, block slots, hooks, the context, kv prompts
chosen per sample, gradient checkpointing and the family registry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from samdg.errors import SamdgError
from samdg.models.backbones import (
    Block,
    ConvBlock,
    KeyValuePrompt,
    KVTokens,
    TransformerBlock,
    build_backbone,
    build_sam,
    get_family,
    get_variant,
    register_family,
    registry,
)
from samdg.models.params import freeze, trainable_names

# --- stages ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, ends", [
    ("vit_b", [2, 5, 8, 11]), ("vit_l", [5, 11, 17, 23]), ("vit_h", [7, 15, 23, 31]), ("tiny_vit_test", [1, 3, 5, 7]),
])
def test_vit_stages_end_at_the_global_attention_blocks(variant, ends):
    with torch.device("meta"):
        encoder = build_backbone(get_variant(variant))
    stages = encoder.stages()
    names = dict((id(block), name) for name, block in encoder.named_blocks())
    assert [names[id(stage.blocks[-1])] for stage in stages] == [f"blocks.{end}" for end in ends]
    assert sum(len(stage.blocks) for stage in stages) == len(encoder.blocks)
    assert all(stage.blocks[-1].window_size == 0 for stage in stages)  # each stage ends with global attention
    assert all(stage.downsample is None and stage.tap is None for stage in stages)
    assert [stage.block_taps[-1] for stage in stages] == [f"block{end}" for end in ends]


def test_tinyvit_stages_are_its_four_layers():
    encoder = build_sam("tiny_tinyvit_test").image_encoder
    stages = encoder.stages()
    spec = encoder.config.encoder
    assert [len(stage.blocks) for stage in stages] == list(spec.depths)
    assert [stage.tap for stage in stages] == ["stage0", "stage1", "stage2", "stage3"]
    assert [(stage.channels, stage.grid) for stage in stages] == [(16, (64, 64)), (24, (32, 32)), (32, (16, 16)),
                                                                   (48, (16, 16))]
    assert all(isinstance(block, ConvBlock) for block in stages[0].blocks)
    assert all(isinstance(block, TransformerBlock) for stage in stages[1:] for block in stage.blocks)
    assert [stage.downsample is None for stage in stages] == [False, False, False, True]


# --- block slots ------------------------------------------------------------------------------------------------------

def test_every_block_has_empty_slots_and_the_mlp_gets_the_normalised_input(encoder):
    blocks = encoder.named_blocks()
    assert blocks and all(isinstance(block, Block) and block.input_adapter is None for _, block in blocks)
    transformer_blocks = encoder.transformer_blocks()
    assert transformer_blocks and all(block.parallel_mlp is None and block.attn.kv_prompt is None
                                      for _, block in transformer_blocks)
    assert encoder.extensions() == []
    _, block = transformer_blocks[0]
    stage = next(stage for stage in encoder.stages() if block in stage.blocks)
    x = torch.randn(2, *stage.grid, stage.channels)  # channels-last, as every block takes it
    seen = []
    handle = block.mlp.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        out = block(x, {})
        mixed = block.mix_tokens(x, {})
    handle.remove()
    assert out.shape == x.shape
    torch.testing.assert_close(seen[0], block.mlp_norm(mixed))
    # Freshly initialised norms: each token of the MLP input has zero mean and unit variance in both families.
    torch.testing.assert_close(seen[0].mean(-1), torch.zeros(seen[0].shape[:-1]), atol=1e-5, rtol=0)


class ChannelGate(nn.Module):
    """An input adapter: x + x * w, a learned gate per channel, (B,H,W,C)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x, context):
        return x + x * self.weight


class ExpertMLP(nn.Module):
    """A parallel (expert) MLP, one per modality, chosen per sample from ``context["modality"]``."""

    def __init__(self, channels, experts=2):
        super().__init__()
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(),
                                                   nn.Linear(2 * channels, channels)) for _ in range(experts))

    def forward(self, normed, context):
        outputs = torch.stack([expert(normed) for expert in self.experts], dim=1)  # (B,E,H,W,C)
        return outputs[torch.arange(len(normed)), context["modality"]]


def _fill_slots(encoder):
    for stage in encoder.stages():
        for block in stage.blocks:
            block.input_adapter = ChannelGate(stage.channels)
            if isinstance(block, TransformerBlock):
                block.parallel_mlp = ExpertMLP(stage.channels)


def test_filled_slots_change_the_output_train_and_have_stable_names(encoder, make_images):
    images = make_images(encoder)
    modality = torch.tensor([0, 1])
    with torch.no_grad():
        before = encoder(images)
    freeze(encoder)
    _fill_slots(encoder)
    names = trainable_names(encoder)
    assert names and all(".input_adapter." in name or ".parallel_mlp." in name for name in names)
    assert {name.split(".input_adapter.")[0] for name in names if ".input_adapter." in name} == {
        name for name, _ in encoder.named_blocks()}
    extension_names = [name for name, _ in encoder.extensions()]
    assert len(extension_names) == len(encoder.named_blocks()) + len(encoder.transformer_blocks())
    assert all(any(name.startswith(f"{extension}.") for extension in extension_names) for name in names)
    after, _ = encoder.forward_features(images, context={"modality": modality})
    assert not torch.allclose(after, before, atol=1e-4)
    after.square().mean().backward()
    for _, block in encoder.named_blocks():
        assert block.input_adapter.weight.grad.abs().sum() > 0
    for _, block in encoder.transformer_blocks():
        used, unused = block.parallel_mlp.experts[0], block.parallel_mlp.experts[1]
        assert used[0].weight.grad.abs().sum() > 0 and unused[0].weight.grad.abs().sum() > 0  # one image each
    # a state_dict round trip into a fresh encoder with the same slots reproduces the output
    clone = build_sam(encoder.config.name).image_encoder
    _fill_slots(clone)
    clone.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        again, _ = clone.forward_features(images, context={"modality": modality})
    torch.testing.assert_close(again, after.detach())


# --- hooks and the context --------------------------------------------------------------------------------------------

class RecordingHook(nn.Module):
    """A hook (B,C,h,w) -> (B,C,h,w): scales by a learned factor and carries a stream in the context, as DB-SAM's
    parallel branch does; records the shapes it saw."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.scale = nn.Parameter(torch.tensor(1.1))
        self.shapes = []

    def forward(self, x, context):
        self.shapes.append(tuple(x.shape[1:]))
        context["stream"] = context.get("stream", 0.0) + self.scale * x.mean()
        context.setdefault("order", []).append(self.name)
        return x * self.scale


def _fill_hooks(encoder):
    encoder.stem_hook = RecordingHook("stem")
    for index in range(len(encoder.stage_hooks)):
        encoder.stage_hooks[index] = RecordingHook(f"stage{index}")
    encoder.neck_hook = RecordingHook("neck")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_hooks_see_channels_first_stage_outputs_in_order_and_share_the_context(encoder, checkpointing, make_images):
    _fill_hooks(encoder)
    encoder.gradient_checkpointing = checkpointing
    stages = encoder.stages()
    context = {"domain": ["a", "b"]}
    embedding, taps = encoder.forward_features(make_images(encoder), ("stem",), context=context)
    assert context["order"] == ["stem"] + [f"stage{i}" for i in range(len(stages))] + ["neck"]
    assert {"domain", "images", "stem", "stream"} <= set(context)
    assert encoder.stem_hook.shapes == [encoder.feature_shapes()["stem"]]
    for stage in stages:
        assert encoder.stage_hooks[stage.index].shapes == [(stage.out_channels, *stage.out_grid)]
    last = stages[-1]
    assert encoder.neck_hook.shapes == [(last.out_channels, *last.out_grid)]
    torch.testing.assert_close(taps["stem"], context["stem"])  # taps are taken before the hook
    (embedding.square().mean() + context["stream"]).backward()
    assert {name for name, _ in encoder.extensions()} == {"stem_hook", "neck_hook"} | {
        f"stage_hooks.{i}" for i in range(len(stages))}
    assert all(hook.scale.grad is not None and hook.scale.grad.abs() > 0 for _, hook in encoder.extensions())
    assert "stage_hooks.0.scale" in encoder.state_dict() and "stem_hook.scale" in encoder.state_dict()


class CountingGate(ChannelGate):
    """An input adapter that counts its calls and writes to the context."""

    def __init__(self, channels):
        super().__init__(channels)
        self.calls = 0

    def forward(self, x, context):
        self.calls += 1
        context["last_gate"] = self.weight.sum()
        return super().forward(x, context)


def test_gradient_checkpointing_recomputes_each_block_with_the_same_gradients(encoder, make_images):
    encoder.train()
    _fill_hooks(encoder)
    for stage in encoder.stages():
        for block in stage.blocks:
            block.input_adapter = CountingGate(stage.channels)
    images = make_images(encoder)
    plain = copy.deepcopy(encoder)
    encoder.gradient_checkpointing = True
    grads = []
    for model in (plain, encoder):
        context = {}
        out, taps = model.forward_features(images, model.default_taps, context=context)
        loss = out.square().mean() + sum(t.square().mean() for t in taps.values()) + context["last_gate"]
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    first = lambda model: model.named_blocks()[0][1].input_adapter.calls  # noqa: E731
    assert (first(plain), first(encoder)) == (1, 2)  # recomputed in the backward pass
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


# --- kv prompts -------------------------------------------------------------------------------------------------------

class PerImagePrompt(nn.Module):
    def __init__(self, first: KeyValuePrompt, second: KeyValuePrompt):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, context):
        a, b = self.first(context), self.second(context)
        return KVTokens(torch.stack([a.key, b.key]), torch.stack([a.value, b.value]), None)


def test_kv_prompts_change_the_output_receive_gradients_and_can_differ_per_image(encoder, make_images):
    images = make_images(encoder)
    with torch.no_grad():
        before = encoder(images)
    prompts = encoder.attach_kv_prompts(
        lambda name, attention: KeyValuePrompt(attention.num_heads, attention.head_dim, num_tokens=2, logit_bias=True)
    )
    assert len(prompts) == len(encoder.attention_modules()) == len(encoder.transformer_blocks()) > 0
    after = encoder(images)
    assert not torch.allclose(after, before, atol=1e-4)
    after.square().mean().backward()
    for prompt in prompts.values():
        assert prompt.key.grad.abs().sum() > 0 and prompt.value.grad.abs().sum() > 0
        assert prompt.logit_bias.grad.abs().sum() > 0

    # one token set per image: image 1 sees exactly the shared prompt, image 0 another one
    shared = encoder.attach_kv_prompts(
        lambda name, attention: KeyValuePrompt(attention.num_heads, attention.head_dim, shared=True)
    )
    with torch.no_grad():
        with_shared = encoder(images)
        encoder.attach_kv_prompts(lambda name, attention: PerImagePrompt(
            KeyValuePrompt(attention.num_heads, attention.head_dim), shared[name]))
        per_image = encoder(images)
    torch.testing.assert_close(per_image[1], with_shared[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(per_image[0], with_shared[0], atol=1e-4)


def test_kv_prompt_tokens_chosen_per_sample_by_modality(encoder, make_images):
    images = make_images(encoder, batch=3)
    modality = torch.tensor([1, 0, 1])
    chosen = encoder.attach_kv_prompts(lambda name, attention: KeyValuePrompt(
        attention.num_heads, attention.head_dim, num_tokens=2, select_by="modality", num_choices=2))
    with torch.no_grad():
        mixed, _ = encoder.forward_features(images, context={"modality": modality})
        alone = []
        for choice in (0, 1):  # the same encoder with choice k's tokens for the whole batch
            single = copy.deepcopy(encoder)
            single.attach_kv_prompts(lambda name, attention, k=choice: _fixed_prompt(chosen[name], k))
            alone.append(single(images))
    for index, k in enumerate(modality.tolist()):
        torch.testing.assert_close(mixed[index], alone[k][index], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[1], atol=1e-4)
    with pytest.raises(SamdgError, match="context\\['modality'\\]"):
        encoder(images)


def _fixed_prompt(prompt: KeyValuePrompt, choice: int) -> nn.Module:
    fixed = KeyValuePrompt(prompt.key.shape[1], prompt.key.shape[3], num_tokens=prompt.key.shape[2])
    with torch.no_grad():
        fixed.key.copy_(prompt.key[choice])
        fixed.value.copy_(prompt.value[choice])
    return fixed


# --- the family registry ----------------------------------------------------------------------------------------------

def test_families_are_registered_by_decorator(monkeypatch):
    assert get_family("vit").family == "vit" and get_family("tinyvit").family == "tinyvit"
    with pytest.raises(SamdgError, match="unknown backbone family 'resnet'; known families: tinyvit, vit"):
        get_family("resnet")
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    with pytest.raises(ValueError, match="registered twice"):
        register_family("vit")(type("OtherViT", (get_family("tinyvit"),), {}))
    with pytest.raises(ValueError, match="unknown family 'resnet'"):
        registry.VariantConfig(name="x", family="resnet", input_size=64, intensity="unit_range",
                               encoder=get_variant("tiny_vit_test").encoder, default_taps=())
