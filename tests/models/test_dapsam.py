"""DAPSAM on the tiny random variants of both backbone families (CPU): structure, pieces, options, training."""

from __future__ import annotations

import os

import pytest
import torch

import samdg.models.methods.dapsam  # noqa: F401  (registers "dapsam")
from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.models.backbones import ConvBlock, TransformerBlock, build_sam
from samdg.models.layers.adapters import ChannelAttentionFilter, GeneralizedAdapter, ParallelAdapter
from samdg.models.layers.low_level_features import LOW_LEVEL_KEY, LowLevelFeatures
from samdg.models.layers.prototype_prompt import MemoryBank, PrototypePromptGenerator
from samdg.models.methods import build_method, default_settings

TINY = ("tiny_vit_test", "tiny_tinyvit_test")
SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})


def make_dapsam(variant: str, seed: int = 0, input_size: int | None = None, **settings):
    torch.manual_seed(seed)
    sam = build_sam(variant, pretrained=False, input_size=input_size)
    method = build_method("dapsam", sam, settings, SPEC)
    # What the trainer does: train exactly what the method declares.
    method.requires_grad_(False)
    for parameter in method.trainable_parameters():
        parameter.requires_grad_(True)
    return method


def images_for(method, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = method.image_encoder.config.input_size
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- the pieces ---------------------------------------------------------------------------------------------------

def test_channel_attention_filter_is_parameter_free_and_gates_per_channel():
    x = torch.randn(2, 5, 7, 6)  # (B,H,W,C)
    plain, width = ChannelAttentionFilter(), ChannelAttentionFilter(width_gated=True)
    assert sum(p.numel() for p in plain.parameters()) == 0 and sum(p.numel() for p in width.parameters()) == 0
    expected_gate = torch.sigmoid(x.amax(dim=(1, 2)) + x.mean(dim=(1, 2)))  # (B,C)
    torch.testing.assert_close(plain(x), x * expected_gate[:, None, None, :])
    # The released bug: one gate per image column, pooled over rows and channels.
    column_gate = torch.sigmoid(x.amax(dim=(1, 3)) + x.mean(dim=(1, 3)))  # (B,W)
    torch.testing.assert_close(width(x), x * column_gate[:, None, :, None])
    assert not torch.allclose(plain(x), width(x))


def test_adapter_shapes_and_bottleneck_width():
    x, low = torch.randn(2, 4, 4, 32), torch.randn(2, 4, 4, 32)
    context = {LOW_LEVEL_KEY: [torch.zeros(2, 4, 4, 32), low]}  # as the stem hook leaves it; source 1 is ours
    generalized, parallel = GeneralizedAdapter(32, 8, source=1), ParallelAdapter(32, 8, source=1)
    assert generalized(x, context).shape == x.shape and parallel(x, context).shape == x.shape
    assert generalized.mlp.fc1.out_features == 8 and parallel.mlp.fc2.in_features == 8
    # The generalised adapter is residual: x + MLP(filter(0.5 x + low)); the parallel one is scaled by 0.5.
    torch.testing.assert_close(generalized(x, context) - x, generalized.mlp(generalized.filter(0.5 * x + low)))
    torch.testing.assert_close(parallel(x, context), 0.5 * parallel.mlp(parallel.filter(x + low)))


def test_low_level_projection_is_per_token_unless_scrambled():
    torch.manual_seed(0)
    fixed = LowLevelFeatures(8, [(8, (3, 4))])
    scrambled = LowLevelFeatures(8, [(8, (3, 4))], scrambled=True)
    scrambled.load_state_dict(fixed.state_dict())
    stem = torch.randn(1, 8, 3, 4)  # the stem hook's input, channels-first (B,C,H,W)
    per_token = fixed.projections[0](stem.permute(0, 2, 3, 1))
    context, scrambled_context = {}, {}
    assert fixed(stem, context) is stem  # a stem hook that leaves the stem alone
    torch.testing.assert_close(context[LOW_LEVEL_KEY][0], per_token)
    scrambled(stem, scrambled_context)
    assert not torch.allclose(scrambled_context[LOW_LEVEL_KEY][0], per_token)


def test_low_level_projection_to_a_stage_grid_area_averages_the_stem():
    features = LowLevelFeatures(4, [(4, (8, 8)), (6, (4, 4))])
    stem = torch.randn(2, 4, 8, 8)  # TinyViT's stem, channels-first
    context = {}
    features(stem, context)
    out = context[LOW_LEVEL_KEY][1]
    assert out.shape == (2, 4, 4, 6)
    pooled = torch.nn.functional.avg_pool2d(stem, 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, features.projections[1](pooled))


def test_memory_bank_and_prompt_generator_shapes():
    generator = PrototypePromptGenerator(dim=256, memory_slots=256)
    assert generator.memory_bank.memory.shape == (256, 256)
    assert generator.fuse.in_channels == 2 * 256 + 1 and generator.fuse.out_channels == 256
    embedding = torch.randn(3, 256, 5, 5)
    assert generator.prototype(embedding).shape == (3, 256)
    weights = generator.memory_bank.addressing(generator.prototype(embedding))
    assert weights.shape == (3, 256)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert generator(embedding).shape == (3, 256, 5, 5)
    bank = MemoryBank(slots=4, dim=3)
    query = torch.randn(2, 3)
    torch.testing.assert_close(bank(query), bank.addressing(query) @ bank.memory)


# --- the method ---------------------------------------------------------------------------------------------------

def test_vit_module_structure():
    method = make_dapsam("tiny_vit_test")
    dim = method.image_encoder.config.encoder.embed_dim
    blocks = method.image_encoder.named_blocks()
    assert len(blocks) == method.image_encoder.config.encoder.depth
    for _, block in blocks:
        assert isinstance(block.input_adapter, GeneralizedAdapter) and isinstance(block.parallel_mlp, ParallelAdapter)
        assert block.input_adapter.mlp.fc1.in_features == dim
        assert block.input_adapter.mlp.fc1.out_features == dim // 4
        assert block.parallel_mlp.mlp.fc1.out_features == dim // 4
        assert block.input_adapter.source == block.parallel_mlp.source == 0  # one projection for all blocks
    projections = method.image_encoder.stem_hook.projections
    assert [(p.in_features, p.out_features) for p in projections] == [(dim, dim)]
    assert method.mask_decoder.num_mask_tokens == SPEC.num_classes


def test_tinyvit_module_structure():
    method = make_dapsam("tiny_tinyvit_test")
    spec = method.image_encoder.config.encoder
    stages = method.image_encoder.stages()
    assert len(stages) == 4
    for index, stage in enumerate(stages):
        assert len(stage.blocks) == spec.depths[index]
        for block in stage.blocks:
            assert block.input_adapter.mlp.fc1.in_features == spec.embed_dims[index]
            assert block.input_adapter.source == index  # the stage's own projection of the stem
            # Stage 0's MBConv blocks (conv blocks) have no MLP, hence no parallel adapter.
            assert isinstance(block, ConvBlock if index == 0 else TransformerBlock)
            assert (getattr(block, "parallel_mlp", None) is None) == (index == 0)
    projections = method.image_encoder.stem_hook.projections
    assert [(p.in_features, p.out_features) for p in projections] == [(spec.embed_dims[0], d) for d in spec.embed_dims]


@pytest.mark.parametrize("variant", TINY)
def test_only_adapters_prompt_generator_and_decoder_train(variant):
    method = make_dapsam(variant)
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    slots = tuple(f"image_encoder.{name}." for name, _ in method.image_encoder.extensions())
    for name in trainable:
        assert name.startswith(("prompt_generator.", "mask_decoder.") + slots), name
        assert "iou_prediction_head" not in name  # no prompt, nothing to score: it would get no gradient
    assert {name for name in trainable if name.startswith("image_encoder.")} == {
        name for name, _ in method.named_parameters() if name.startswith(slots)}
    assert any(name.startswith("image_encoder.stem_hook.") for name in trainable)
    assert any(name.startswith("mask_decoder.transformer.") for name in trainable)
    frozen_encoder = [p for name, p in method.named_parameters()
                      if name.startswith("image_encoder.") and not name.startswith(slots)]
    assert frozen_encoder and not any(p.requires_grad for p in frozen_encoder)

    outputs = method({"image": images_for(method), "target": None})
    loss, _ = method.loss(outputs, {"target": torch.randint(0, 3, (2,) + tuple(images_for(method).shape[-2:]))})
    loss.backward()
    missing = [name for name, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # every declared parameter gets a gradient (DDP needs that)
    assert all(p.grad is None for p in frozen_encoder)


@pytest.mark.parametrize("variant", TINY)
def test_prediction_shapes_and_batch_independence(variant):
    method = make_dapsam(variant).eval()
    images = images_for(method, batch=2)
    size = images.shape[-1]
    embedding_size = method.image_encoder.config.embedding_size
    with torch.no_grad():
        logits = method.predict(images)
        alone = method.predict(images[1:])
    assert logits.shape == (2, SPEC.num_classes, 4 * embedding_size, 4 * embedding_size)
    assert 4 * embedding_size <= size
    torch.testing.assert_close(logits[1:], alone, rtol=1e-4, atol=1e-4)


def test_positional_encoding_follows_the_embedding_size_and_is_sams():
    method = make_dapsam("tiny_vit_test", input_size=96)  # 6x6 tokens instead of 8x8
    embedding = method.encode(images_for(method, batch=1))["embedding"]
    assert embedding.shape[-2:] == (6, 6)
    positional = method.dense_positional_encoding(embedding)
    assert positional.shape == (1, 256, 6, 6)
    # SAM's pretrained Fourier matrix (the prompt encoder's buffer), not a fresh random one.
    torch.testing.assert_close(positional, method.prompt_encoder.get_dense_pe())
    assert not [name for name, _ in method.named_buffers() if "gaussian" in name and "prompt_encoder" not in name]


@pytest.mark.parametrize("variant", TINY)
@pytest.mark.parametrize("option", ["scrambled_low_level_embedding", "width_gated_filter"])
def test_bug_options_change_the_output(variant, option):
    fixed = make_dapsam(variant).eval()
    buggy = make_dapsam(variant, **{option: True}).eval()
    buggy.load_state_dict(fixed.state_dict())  # same weights: only the option differs
    images = images_for(fixed, batch=1)
    with torch.no_grad():
        reference = fixed.encode(images)["embedding"]
        changed = buggy.encode(images)["embedding"]
        again = make_dapsam(variant).eval()
        again.load_state_dict(fixed.state_dict())
        same = again.encode(images)["embedding"]
    torch.testing.assert_close(same, reference)
    assert (changed - reference).abs().max() > 1e-4


def test_intensity_option_reproduces_the_released_zscore_and_rejects_unknown_names():
    own = make_dapsam("tiny_vit_test").eval()
    zscore = make_dapsam("tiny_vit_test", intensity="per_image_zscore").eval()
    zscore.load_state_dict(own.state_dict())
    assert own.image_encoder.intensity == "sam_meanstd_255"
    assert zscore.image_encoder.intensity == "per_image_zscore"
    images = images_for(own, batch=1)
    with torch.no_grad():
        assert not torch.allclose(own.encode(images)["embedding"], zscore.encode(images)["embedding"])
    with pytest.raises(SamdgError, match="methods.dapsam.intensity"):
        make_dapsam("tiny_vit_test", intensity="zscore")


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = make_dapsam("tiny_vit_test")
    checkpointed = make_dapsam("tiny_vit_test", gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = images_for(plain)
    target = torch.randint(0, 3, (2,) + tuple(images.shape[-2:]), generator=torch.Generator().manual_seed(2))
    grads = []
    for method in (plain, checkpointed):
        method.train()
        loss, _ = method.loss(method({"image": images}), {"target": target})
        loss.backward()
        grads.append(method.image_encoder.stem_hook.projections[0].weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_defaults_carry_the_reference_recipe():
    settings = default_settings("dapsam")
    assert settings["memory_slots"] == 256 and settings["adapter_ratio"] == 0.25
    assert settings["scrambled_low_level_embedding"] is False and settings["width_gated_filter"] is False
    assert settings["input_size_by_family"]["vit"] == 384 and settings["batch_size"] == 8
    method = make_dapsam("tiny_vit_test")
    assert method.settings.poly_exponent == 0.9 and 0 < method.settings.warmup_fraction < 0.05
    assert (method.settings.bce_weight, method.settings.dice_weight) == (0.2, 0.8)
    setup = method.configure_optimizers(total_steps=1000)
    assert isinstance(setup.optimizer, torch.optim.AdamW) and not setup.grad_clip  # released: no clipping
    group = setup.optimizer.param_groups[0]
    assert group["lr"] == 5e-4 * 1 / 5 and group["weight_decay"] == 0.1  # 5 warm-up steps: 1/5 of 5e-4 at step 0


def test_intensity_choices_are_the_backbones_conventions():
    import typing

    from samdg.models.backbones.intensity import INTENSITY_CONVENTIONS
    from samdg.models.methods.dapsam import IntensityChoice

    assert set(typing.get_args(IntensityChoice)) == {"", *INTENSITY_CONVENTIONS}


@pytest.mark.parametrize("variant", TINY)
def test_loss_decreases_when_fitting_one_batch(variant):
    method = make_dapsam(variant).train()
    images = images_for(method, batch=1)
    size = images.shape[-1]
    target = torch.zeros(1, size, size, dtype=torch.long)
    target[:, size // 4: size // 2, size // 4: 3 * size // 4] = 1
    target[:, size // 2 + 2: 3 * size // 4 + 2, size // 3: 2 * size // 3] = 2
    batch = {"image": images, "target": target}
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3, weight_decay=method.settings.weight_decay)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss, _ = method.loss(method(batch), batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_vit_b_384_trainable_parameters_match_the_reference():
    """The released code's ViT-B/384 prostate model: 7,691,520 adapter + 197,120 generator + 3,637,377 decoder."""
    torch.manual_seed(0)
    sam = build_sam("vit_b", pretrained=False, input_size=384)
    method = build_method("dapsam", sam, {}, LabelSpec.from_dataset_json({"background": 0, "prostate": 1}))
    count = lambda parameters: sum(p.numel() for p in parameters)  # noqa: E731
    assert count(method.adapter_parameters()) == 7_691_520
    assert count(method.prompt_generator.parameters()) == 197_120
    iou_head = count(method.mask_decoder.iou_prediction_head.parameters())
    assert count(method.trainable_parameters()) + iou_head == 11_526_017  # the reference's 11.53 M
    assert count(method.trainable_parameters()) == 11_394_176  # ours: the unused IoU head stays frozen


# --- through the trainer and the predictor -------------------------------------------------------------------------

def test_train_and_predict_on_cpu(samdg_roots):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.imageio import read_label
    from samdg.inference.predictor import Predictor
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training import TrainingArgs, train

    raw = samdg_roots["raw"] / "Dataset901_Synthetic"
    make_synthetic_dataset(raw, num_domains=2, cases_per_domain=2, test_cases_per_domain=1, shape=(32, 32, 6))
    plan_and_preprocess(901, variant="tiny_tinyvit_test", progress=False, log=lambda *args: None)
    domains = sorted({name.split("_")[1] for name in os.listdir(raw / "imagesTr")})
    fold_dir = train(TrainingArgs(dataset="901", method="dapsam", fold="all", epochs=1, iters_per_epoch=2,
                                  batch_size=2, device="cpu", source_domains=[domains[0]], num_workers=0,
                                  progress_bar=False, final_validation=False))
    assert (fold_dir / "checkpoint_final.pth").is_file()

    predictor = Predictor.from_model_dir(fold_dir, device="cpu", progress=False)
    assert type(predictor.methods[0]).__name__ == "DAPSAM"
    test_image = sorted((raw / "imagesTs").iterdir())[0]
    label_map, probabilities, _ = predictor.predict_case([test_image], return_probabilities=True)
    reference, _ = read_label(raw / "labelsTs" / test_image.name.replace("_0000", ""))
    assert label_map.shape == reference.shape
    assert probabilities.shape == (3,) + reference.shape
    assert set(label_map.ravel().tolist()) <= {0, 1, 2, 3}
