"""DB-SAM on the tiny random variants of both families (CPU): its parts, options, parameter counts, training."""

from __future__ import annotations

import pytest
import torch

from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.dbsam_blocks import (
    CONV_STREAM,
    ChannelAttentionAdapter,
    ChannelAttentionBlock,
    ConvBranch,
    DBSamStageHook,
    ViTConvFusion,
)
from samdg.models.methods import build_method, default_settings

TINY = ("tiny_vit_test", "tiny_tinyvit_test")
SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})


def make_dbsam(variant: str, seed: int = 0, **settings):
    torch.manual_seed(seed)
    method = build_method("dbsam", build_sam(variant, pretrained=False), settings, SPEC)
    method.freeze_all_but_trainable()
    return method


def images_for(method, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = method.image_encoder.config.input_size
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- the parts on every family -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", TINY)
def test_parts_sit_in_the_hooks_with_the_stages_shapes(variant):
    method = make_dbsam(variant)
    encoder = method.image_encoder
    stages = encoder.stages()
    assert isinstance(encoder.stem_hook, ConvBranch) and isinstance(encoder.neck_hook, ViTConvFusion)
    assert all(isinstance(hook, DBSamStageHook) for hook in encoder.stage_hooks)
    assert encoder.stem_hook.low_resolution == 4 * encoder.config.embedding_size

    images = images_for(method)
    shallow = encoder.stem_hook.shallow_features(encoder.normalize(images))
    assert shallow.shape == (2, stages[0].out_channels, *stages[0].out_grid)
    context = {}
    embedding, _ = encoder.forward_features(images, context=context)
    assert embedding.shape == (2, 256, encoder.config.embedding_size, encoder.config.embedding_size)
    assert context[CONV_STREAM].shape == (2, stages[-1].out_channels, *stages[-1].out_grid)  # what the fusion saw
    widths_change = len({(s.out_channels, s.out_grid) for s in stages}) > 1
    assert any(hook.carry is not None for hook in encoder.stage_hooks) == widths_change  # TinyViT only


def test_channel_attention_starts_as_identity_and_then_acts_per_channel():
    block = ChannelAttentionBlock(8)
    x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(block(x), x)
    with torch.no_grad():
        block.pointwise.weight.normal_()
    assert block(x).shape == x.shape and not torch.allclose(block(x), x)


def test_fusion_gates_between_the_branches():
    fusion = ViTConvFusion(4)
    vit, conv = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    gate = torch.sigmoid(torch.tensor(ViTConvFusion.INITIAL_GATE_LOGIT))
    torch.testing.assert_close(fusion(vit, {CONV_STREAM: conv}), gate * vit + (1 - gate) * conv)
    with torch.no_grad():
        fusion.vit_gate[-1].bias.fill_(-30.0)  # gate closed: the conv branch alone
    torch.testing.assert_close(fusion(vit, {CONV_STREAM: conv}), conv)


@pytest.mark.parametrize("variant", TINY)
def test_channel_attention_after_every_block_option(variant):
    per_stage = make_dbsam(variant)
    per_block = make_dbsam(variant, channel_attention="block")
    assert not any(block.input_adapter is not None for _, block in per_stage.image_encoder.named_blocks())
    for stage in per_block.image_encoder.stages():
        assert stage.blocks[0].input_adapter is None  # the previous stage's hook follows the block before it
        assert all(isinstance(block.input_adapter, ChannelAttentionAdapter) for block in stage.blocks[1:])
    count = lambda parameters: sum(p.numel() for p in parameters)  # noqa: E731
    adapters = [block.input_adapter for _, block in per_block.image_encoder.named_blocks() if block.input_adapter]
    added = count(p for adapter in adapters for p in adapter.parameters())
    assert count(per_block.trainable_parameters()) == count(per_stage.trainable_parameters()) + added > 0


def test_the_encoder_trains_so_its_output_is_never_cached():
    method = make_dbsam("tiny_vit_test")
    assert method.cacheable_features() is None
    names = {name for name, p in method.named_parameters() if p.requires_grad}
    assert not any(name.startswith(("image_encoder.blocks", "image_encoder.neck.", "prompt_encoder")) for name in names)
    assert any(name.startswith("image_encoder.stage_hooks") for name in names)


@pytest.mark.parametrize("prompt", ["none", "whole_image_box"])
def test_automatic_prompts(prompt):
    method = make_dbsam("tiny_vit_test", prompt=prompt).eval()
    sparse, _ = method.prompt_embeddings(torch.device("cpu"))
    assert sparse.shape[:2] == ((1, 2) if prompt == "whole_image_box" else (1, 0))  # two box corners or nothing
    with torch.no_grad():
        logits = method.predict(images_for(method))
    assert logits.shape == (2, SPEC.num_classes, 32, 32)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = make_dbsam("tiny_tinyvit_test")
    checkpointed = make_dbsam("tiny_tinyvit_test", gradient_checkpointing=True)
    with torch.no_grad():  # leave the zero initialisation, so that gradients reach the first layers
        plain.image_encoder.neck_hook.conv_gate[-1].weight.normal_(0, 0.1)
        for hook in plain.image_encoder.stage_hooks:
            hook.cross_attention.vit_from_conv.scale_attn.fill_(0.5)
    checkpointed.load_state_dict(plain.state_dict())
    images = images_for(plain)
    target = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(2))
    grads = []
    for method in (plain, checkpointed):
        method.train()
        loss, _ = method.loss(method({"image": images}), {"target": target})
        loss.backward()
        grads.append(method.image_encoder.stem_hook.convs[0][0].weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_defaults_carry_the_released_recipe():
    settings = default_settings("dbsam")
    assert settings["prompt"] == "whole_image_box" and settings["channel_attention"] == "stage"
    setup = make_dbsam("tiny_vit_test").configure_optimizers(total_steps=100)
    group = setup.optimizer.param_groups[0]
    assert isinstance(setup.optimizer, torch.optim.AdamW) and group["weight_decay"] == 0.01
    assert group["lr"] == pytest.approx(1e-4 / 5)  # 5 warm-up steps of 100 (one epoch of the released 20)


def test_vit_b_trainable_parameter_counts():
    """The figures of documentation/methods/dbsam.md (binary task), counted on the meta device."""
    binary = LabelSpec.from_dataset_json({"background": 0, "organ": 1})
    counts = {}
    for option in ("stage", "block"):
        with torch.device("meta"):
            method = build_method("dbsam", build_sam("vit_b", pretrained=False), {"channel_attention": option},
                                  binary)
        counts[option] = sum(p.numel() for p in method.trainable_parameters())
        decoder = sum(p.numel() for part in method.mask_decoder_parts(method.mask_decoder) for p in part.parameters())
    assert decoder == 3_505_536
    assert counts == {"stage": 22_374_912, "block": 29_532_672}



def test_released_architecture_trains_every_part_and_its_neck():
    from samdg.models.layers.dbsam_released import (
        CONV_PYRAMID,
        ImagePyramidBranch,
        PyramidStageHook,
        SoftmaxSourceFusion,
    )
    from samdg.training.optim import configure_optimization

    method = make_dbsam("tiny_vit_test", architecture="released")
    encoder = method.image_encoder
    assert isinstance(encoder.stem_hook, ImagePyramidBranch) and isinstance(encoder.neck_hook, SoftmaxSourceFusion)
    assert all(isinstance(hook, PyramidStageHook) and len(hook.blocks) == 2 for hook in encoder.stage_hooks)
    assert [level.size for level in encoder.stem_hook.levels] == [64, 32, 16, 8]  # 8E, 4E, 2E, E
    neck = {id(p) for p in encoder.neck.parameters()}
    assert neck <= {id(p) for p in method.trainable_parameters()}

    method.train()
    images = images_for(method, batch=1)
    context = {}
    encoder.forward_features(images, context=context)
    assert [tuple(m.shape) for m in context[CONV_PYRAMID]] == [(1, 32, 8, 8)] * 4
    target = torch.randint(0, 3, (1, 128, 128), generator=torch.Generator().manual_seed(2))
    setup = configure_optimization(method, total_steps=10)
    loss, _ = method.loss(method({"image": images}), {"target": target})
    loss.backward()
    assert [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None] == []
    setup.optimizer.step()
    method.eval()
    with torch.no_grad():
        assert method.predict(images).shape == (1, SPEC.num_classes, 32, 32)


def test_released_architecture_vit_b_parameter_counts():
    """The released deformable attention has 1,734,864 parameters per instance (reference notes, measured there)."""
    binary = LabelSpec.from_dataset_json({"background": 0, "organ": 1})
    with torch.device("meta"):
        method = build_method("dbsam", build_sam("vit_b", pretrained=False), {"architecture": "released"}, binary)
    encoder = method.image_encoder
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(encoder.stage_hooks[0].blocks[0].attention) == 1_734_864
    assert count(encoder.stem_hook) == 7_504_384 and count(encoder.neck_hook) == 5_221_824
    assert count(encoder.stage_hooks) == 8 * 6_492_624 and count(encoder.neck) == 787_456
    assert sum(p.numel() for p in method.trainable_parameters()) == 68_960_192

# --- through the public commands -----------------------------------------------------------------------------------

def test_samdg_train_and_benchmark_run_dbsam(samdg_roots, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.cli.benchmark import main as benchmark_main
    from samdg.cli.train import main as train_main
    from samdg.preprocessing.api import plan_and_preprocess

    make_synthetic_dataset(samdg_roots["raw"] / "Dataset904_Synth", num_domains=2, cases_per_domain=2,
                           test_cases_per_domain=1, shape=(32, 32, 4))
    plan_and_preprocess(904, variant="tiny_vit_test", progress=False, log=lambda message: None)

    quick = ["--epochs", "1", "--iters-per-epoch", "2", "--device", "cpu"]
    with pytest.raises(SystemExit) as refused:
        train_main(["904", "dbsam", "all", "--override", "training.augmentation=none", "--embedding-cache",
                    "memory", *quick])
    assert refused.value.code == 2
    assert "trains its image encoder, so encoder features cannot be cached" in capsys.readouterr().err

    assert train_main(["904", "dbsam", "all", "--no-pbar", "--no-final-validation", *quick]) in (0, None)
    fold = samdg_roots["results"] / "Dataset904_Synth" / "dbsam__samdgPlans__2d" / "fold_all"
    assert (fold / "checkpoint_final.pth").is_file()

    assert benchmark_main(["-d", "904", "-m", "dbsam", "--protocol", "single-source", "--disable-progress-bar",
                           "-np", "1", *quick]) == 0
    assert "dbsam" in capsys.readouterr().out


def test_step_speed_script_times_dbsam(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "method_step_speed.py"
    spec = importlib.util.spec_from_file_location("method_step_speed", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "dbsam.json"
    assert script.main(["--out", str(out), "--smoke", "--method", "dbsam"]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "dbsam" and result["steps_per_second"] > 0
