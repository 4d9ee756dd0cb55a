"""Variant registry, official weight layout, checkpoint finding/verification/loading and input-size adaptation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling.image_encoder import get_rel_pos

from samdg.errors import SamdgError
from samdg.models.backbones import SamModel, TinyViTSpec, build_sam, get_variant, list_variants, register_variant
from samdg.models.backbones.attention import _rel_pos_table
from samdg.models.backbones.checkpoints import load_state


def _random_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            state[name] = torch.randn(tensor.shape, generator=generator) * 0.2
        else:
            state[name] = tensor.clone()
    return state


def test_registry_carries_the_numbers_of_each_variant():
    assert {"vit_b", "vit_l", "vit_h", "medsam_vit_b", "litemedsam", "tiny_vit_test", "tiny_tinyvit_test"} <= set(
        list_variants()
    )
    vit_b = get_variant("vit_b")
    assert (vit_b.input_size, vit_b.embedding_size, vit_b.intensity) == (1024, 64, "sam_meanstd_255")
    assert vit_b.checkpoint == "sam_vit_b_01ec64.pth" and len(vit_b.sha256) == 64
    assert vit_b.default_taps == ("block2", "block5", "block8")
    assert get_variant("vit_l").default_taps == ("block5", "block11", "block17")
    assert get_variant("vit_h").default_taps == ("block7", "block15", "block23")
    assert get_variant("medsam_vit_b").intensity == "unit_range"
    lite = get_variant("litemedsam")
    assert (lite.family, lite.input_size, lite.embedding_size, lite.intensity) == ("tinyvit", 256, 64, "unit_range")
    assert lite.sha256 == "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
    assert get_variant("vit_b", input_size=512).embedding_size == 32
    assert vit_b.to_dict()["embedding_size"] == 64


def test_registry_refuses_unknown_names_bad_sizes_and_duplicates():
    with pytest.raises(SamdgError, match="unknown SAM variant 'vit_x'.*vit_b"):
        get_variant("vit_x")
    with pytest.raises(SamdgError, match="multiple of 16"):
        get_variant("vit_b", input_size=1000)
    with pytest.raises(ValueError, match="registered twice"):
        register_variant("vit_b")(lambda: get_variant("vit_b"))


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_vit_variants_have_the_official_segment_anything_layout(variant):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ours = build_sam(variant, pretrained=False)
        stock = sam_model_registry[variant]()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}


def test_official_layout_checkpoint_round_trip(tmp_path):
    model = build_sam("tiny_vit_test")
    state = _random_state(model)
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    loaded = build_sam("tiny_vit_test", checkpoint=path)
    assert loaded.checkpoint_path == str(path)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    # training checkpoints wrap the weights; DDP prefixes them with "module."
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": torch.tensor(3)}, wrapped)
    again = build_sam("tiny_vit_test", checkpoint=wrapped)
    torch.testing.assert_close(again.image_encoder.pos_embed, state["image_encoder.pos_embed"])


def test_missing_weights_name_the_file_the_folder_and_the_download_page(samdg_roots):
    with pytest.raises(SamdgError) as error:
        build_sam("vit_b")
    message = str(error.value)
    assert "sam_vit_b_01ec64.pth" in message and str(samdg_roots["weights"]) in message
    assert "github.com/facebookresearch/segment-anything" in message
    with pytest.raises(SamdgError, match="medsam_vit_b.pth.*bowang-lab/MedSAM"):
        build_sam("medsam_vit_b")
    with pytest.raises(SamdgError, match="nowhere.pth for variant 'vit_l' does not exist"):
        build_sam("vit_l", checkpoint=samdg_roots["weights"] / "nowhere.pth")


def test_corrupt_official_file_fails_its_hash(samdg_roots):
    (samdg_roots["weights"] / "sam_vit_b_01ec64.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SamdgError, match="corrupt.*sha256.*facebookresearch"):
        build_sam("vit_b")


def test_packaged_litemedsam_name_is_hash_checked(tmp_path):
    fake = tmp_path / "lite_medsam.pth"
    torch.save(_random_state(build_sam("tiny_tinyvit_test")), fake)
    with pytest.raises(SamdgError, match="sha256"):
        build_sam("litemedsam", checkpoint=fake)


def test_unreadable_and_misfitting_checkpoints_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(SamdgError, match="garbage.pth cannot be read"):
        build_sam("tiny_vit_test", checkpoint=garbage)

    other_family = tmp_path / "tinyvit.pth"
    torch.save(_random_state(build_sam("tiny_tinyvit_test")), other_family)
    with pytest.raises(SamdgError, match="does not fit variant 'tiny_vit_test'.*missing.*unexpected"):
        build_sam("tiny_vit_test", checkpoint=other_family)

    state = _random_state(build_sam("tiny_vit_test"))
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    reshaped = tmp_path / "reshaped.pth"
    torch.save(state, reshaped)
    with pytest.raises(SamdgError, match="1 wrong shape \\(mask_decoder.iou_token.weight\\)"):
        build_sam("tiny_vit_test", checkpoint=reshaped)

    assert build_sam("tiny_vit_test", checkpoint=garbage, pretrained=False).checkpoint_path is None  # never read

    not_tensors = tmp_path / "dict.pth"
    torch.save({"a": 1}, not_tensors)
    with pytest.raises(SamdgError, match="state_dict of tensors"):
        build_sam("tiny_vit_test", checkpoint=not_tensors)


def test_loading_at_another_input_size_resizes_the_position_embeddings(tmp_path):
    state = _random_state(build_sam("tiny_vit_test"))  # native 128 px: 8x8 tokens
    path = tmp_path / "native.pth"
    torch.save(state, path)
    model = build_sam("tiny_vit_test", checkpoint=path, input_size=192)  # 12x12 tokens
    encoder = model.image_encoder
    assert model.config.input_size == 192 and model.config.embedding_size == 12
    expected_pos = F.interpolate(state["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(12, 12), mode="bicubic",
                                 align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(encoder.pos_embed, expected_pos)
    global_block, window_block = encoder.blocks[1], encoder.blocks[0]
    assert global_block.attn.rel_pos_h.shape == (23, 16)
    assert window_block.attn.rel_pos_h.shape == (5, 16)  # windows keep their size
    torch.testing.assert_close(window_block.attn.rel_pos_w, state["image_encoder.blocks.0.attn.rel_pos_w"])
    # the table resized at load time is the one segment-anything would resize on the fly
    original = state["image_encoder.blocks.1.attn.rel_pos_h"]
    torch.testing.assert_close(_rel_pos_table(12, global_block.attn.rel_pos_h), get_rel_pos(12, 12, original))
    assert model.prompt_encoder.image_embedding_size == (12, 12)
    assert model.prompt_encoder.input_image_size == (192, 192)
    with torch.no_grad():
        images = torch.rand(2, 3, 192, 192)
        logits, iou = model(images, boxes=torch.tensor([[10.0, 20.0, 100.0, 150.0], [0.0, 0.0, 191.0, 191.0]]))
    assert model.encode(images).shape == (2, 256, 12, 12)
    assert logits.shape == (2, 1, 48, 48) and iou.shape == (2, 1)
    assert torch.isfinite(logits).all()


def test_variant_config_is_a_frozen_record():
    config = get_variant("litemedsam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.input_size = 512


def test_mobilesam_variant_is_tinyvit_5m_at_1024_with_a_user_supplied_checkpoint(samdg_roots):
    config = get_variant("mobilesam")
    assert (config.family, config.input_size, config.embedding_size, config.intensity) == (
        "tinyvit", 1024, 64, "sam_meanstd_255")
    assert (config.checkpoint, config.checkpoint_source, config.sha256) == ("mobile_sam.pt", "weights_folder", None)
    with torch.device("meta"):  # shapes only: a 1024-px TinyViT is too slow for a CPU test
        mobile = build_sam("mobilesam", pretrained=False)
        lite = build_sam("litemedsam", pretrained=False)
    assert mobile.image_encoder.feature_shapes() == {
        "stem": (64, 256, 256), "stage0": (128, 128, 128), "stage1": (160, 64, 64), "stage2": (320, 64, 64),
        "stage3": (320, 64, 64)}
    first, second = mobile.image_encoder.patch_embed.seq[0].c, mobile.image_encoder.patch_embed.seq[2].c
    assert (first.weight.shape, first.stride, second.weight.shape, second.stride) == (
        (32, 3, 3, 3), (2, 2), (64, 32, 3, 3), (2, 2))
    # MobileSAM's and LiteMedSAM's checkpoints share every name; only the patch embedding's kernels differ
    mobile_shapes, lite_shapes = mobile.state_dict(), lite.state_dict()
    assert mobile_shapes.keys() == lite_shapes.keys()
    assert {k for k in mobile_shapes if mobile_shapes[k].shape != lite_shapes[k].shape} == {
        "image_encoder.patch_embed.seq.0.c.weight", "image_encoder.patch_embed.seq.2.c.weight"}
    with pytest.raises(SamdgError, match="mobile_sam.pt.*ChaoningZhang/MobileSAM"):
        build_sam("mobilesam")


def _tiny_mobilesam_config():
    """A tiny TinyViT of MobileSAM's layout: 3x3 stride-2 patch embedding (stride 4), merges 2, 2, 1."""
    spec = TinyViTSpec(embed_dims=(16, 24, 32, 48), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 3),
                       window_sizes=(4, 5, 4, 3), merge_strides=(2, 2, 1), patch_kernel=3, patch_stride=2)
    return dataclasses.replace(get_variant("tiny_tinyvit_test"), name="tiny_mobilesam", input_size=128, encoder=spec,
                               intensity="sam_meanstd_255",
                               ignored_checkpoint_keys=("image_encoder.norm_head.", "image_encoder.head."))


def test_a_tiny_mobilesam_layout_runs_with_the_announced_shapes():
    config = _tiny_mobilesam_config()
    assert config.encoder.stride == 16 and config.embedding_size == 8
    model = SamModel.from_config(config).eval()
    encoder = model.image_encoder
    assert encoder.feature_shapes() == {"stem": (16, 32, 32), "stage0": (24, 16, 16), "stage1": (32, 8, 8),
                                        "stage2": (48, 8, 8), "stage3": (48, 8, 8)}
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        embedding, taps = encoder.forward_features(images, encoder.tap_names)
        logits, _ = model(images)
    assert embedding.shape == (2, 256, 8, 8) and logits.shape == (2, 1, 32, 32)
    assert {name: tuple(t.shape[1:]) for name, t in taps.items()} == encoder.feature_shapes()


def test_a_checkpoints_unused_classifier_is_ignored_on_load(tmp_path):
    config = _tiny_mobilesam_config()
    model = SamModel.from_config(config)
    state = _random_state(model)
    state["image_encoder.norm_head.weight"] = torch.ones(48)
    state["image_encoder.head.weight"] = torch.ones(1000, 48)
    load_state(model, state, tmp_path / "mobile_sam.pt", config)
    torch.testing.assert_close(model.image_encoder.neck[0].weight, state["image_encoder.neck.0.weight"])
    strict = dataclasses.replace(config, ignored_checkpoint_keys=())
    with pytest.raises(SamdgError, match="2 unexpected \\(image_encoder.head.weight, image_encoder.norm_head.weight"):
        load_state(SamModel.from_config(strict), state, tmp_path / "mobile_sam.pt", strict)
