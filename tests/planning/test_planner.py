"""Planner decisions for CT, MR, multi-channel and 2D PNG datasets (from real files) and for edge cases (stubs)."""

from __future__ import annotations

import pytest
from raw_builders import (
    fingerprint_stub,
    make_ct_dataset,
    make_mr_dataset,
    make_multichannel_dataset,
    make_png_dataset,
    stub_dataset_json,
)

from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError
from samdg.planning.fingerprint import compute_fingerprint
from samdg.planning.planner import plan_experiment, plan_summary
from samdg.planning.variants import registry_variants


def _plan(folder, **kwargs):
    raw = load_raw_dataset(folder)
    fingerprint = compute_fingerprint(raw, progress=False)
    return plan_experiment(fingerprint, raw.json, **kwargs), fingerprint


def _every_decision_has_a_reason(plans):
    assert plans.decisions and all(d.reason for d in plans.decisions)
    for key in ("slice_axis", "target_spacing", "normalization.0", "channel_mapping", "crop_to_nonzero", "sam.variant",
                "sam.input_size", "training.batch_size", "training.batch_size_cpu", "methods"):
        assert plans.decision(key) is not None, key


def test_ct_dataset(samdg_roots):
    plans, fingerprint = _plan(make_ct_dataset(samdg_roots["raw"]), gpu_memory_gb=24)
    assert plans.modalities == ["CT"] and not plans.is_2d
    assert plans.slice_axis == 0 and plans.transpose_forward == [0, 1, 2] and plans.transpose_backward == [0, 1, 2]
    assert plans.target_spacing == pytest.approx([2.5, 0.8, 0.8])
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    norm = plans.normalization[0]
    assert norm.scheme == "ct_clip_scale"
    assert (norm.clip_low, norm.clip_high) == (stats["percentile_00_5"], stats["percentile_99_5"])
    assert plans.channel_mapping.mode == "replicate"  # 2.5 mm slices vs 0.8 mm pixels: thick
    assert plans.crop_to_nonzero is True
    assert plans.sam.variant == "litemedsam" and plans.sam.input_size == 256 and plans.sam.checkpoint is None
    assert plans.training.batch_size == int((0.9 * 24 - 2) // 1.5) == 13
    assert plans.training.batch_size_cpu == 2
    assert plans.decision("normalization.0.check") is None
    assert plans.median_shape_after_resampling == [12, 36, 40]
    _every_decision_has_a_reason(plans)
    summary = plan_summary(plans)
    for text in ("litemedsam", "input 256 px", "slice axis       0", "ct_clip_scale", "replicate",
                 "batch size       13"):
        assert text in summary


def test_ct_named_channel_without_hounsfield_units_is_flagged(samdg_roots):
    plans, _ = _plan(make_ct_dataset(samdg_roots["raw"], air=0.0), gpu_memory_gb=24)
    check = plans.decision("normalization.0.check")
    assert check is not None and "WARNING" in check.reason and "Hounsfield" in check.reason
    assert "WARNING" in plan_summary(plans)


def test_mr_two_channel_dataset(samdg_roots):
    plans, _ = _plan(make_mr_dataset(samdg_roots["raw"]), gpu_memory_gb=80)
    assert plans.modalities == ["MR", "MR"]
    assert [n.scheme for n in plans.normalization] == ["percentile_clip_scale"] * 2
    assert plans.normalization[1].percentiles == [0.5, 99.5]
    assert plans.channel_mapping.mode == "modalities" and plans.channel_mapping.channels == [0, 1, 0]
    assert plans.slice_axis == 0 and plans.target_spacing == pytest.approx([3.6, 0.6, 0.6])
    assert plans.training.batch_size == int((0.9 * 80 - 2) // 1.5)


def test_multichannel_dataset_uses_the_first_three_with_a_warning(samdg_roots):
    plans, _ = _plan(make_multichannel_dataset(samdg_roots["raw"]), gpu_memory_gb=24)
    assert plans.modalities == ["MR"] * 4 and len(plans.normalization) == 4
    assert plans.channel_mapping.mode == "modalities" and plans.channel_mapping.channels == [0, 1, 2]
    assert "WARNING: 4 channels" in plans.decision("channel_mapping").reason


def test_three_modalities_map_one_to_one(samdg_roots):
    plans, _ = _plan(make_multichannel_dataset(samdg_roots["raw"], names=("T1", "T2", "FLAIR")), gpu_memory_gb=24)
    assert plans.channel_mapping.mode == "modalities" and plans.channel_mapping.channels == [0, 1, 2]
    assert "WARNING" not in plans.decision("channel_mapping").reason


def test_grey_png_dataset(samdg_roots):
    plans, fingerprint = _plan(make_png_dataset(samdg_roots["raw"]), gpu_memory_gb=24)
    assert plans.is_2d and fingerprint["is_2d"]
    assert plans.slice_axis == 0 and plans.transpose_forward == [0, 1, 2]
    assert plans.target_spacing == [999.0, 1.0, 1.0]
    assert plans.modalities == ["other"] and plans.normalization[0].scheme == "percentile_clip_scale"
    assert plans.channel_mapping.mode == "replicate" and plans.crop_to_nonzero is False
    assert plans.median_shape_after_resampling == [1, 48, 64]


def test_rgb_png_dataset(samdg_roots):
    plans, _ = _plan(make_png_dataset(samdg_roots["raw"], rgb=True), gpu_memory_gb=24)
    assert plans.modalities == ["RGB"] * 3
    assert [(n.scheme, n.clip_low, n.clip_high) for n in plans.normalization] == [("rgb_scale", 0.0, 255.0)] * 3
    assert plans.channel_mapping.mode == "rgb" and plans.channel_mapping.channels == [0, 1, 2]
    assert plans.crop_to_nonzero is False


def test_coarsest_axis_becomes_the_slice_axis():
    # canonical (S,A,R) spacing: sagittal acquisition, R is coarse
    fingerprint = fingerprint_stub([(0.9, 0.9, 4.0), (1.0, 1.0, 5.0)], [(100, 90, 20), (110, 80, 22)])
    plans = plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=24)
    assert plans.slice_axis == 2 and plans.transpose_forward == [2, 0, 1] and plans.transpose_backward == [1, 2, 0]
    assert plans.target_spacing == pytest.approx([4.5, 0.95, 0.95])
    assert plans.original_median_shape == [21, 105, 85]
    # ties go to axis 0
    iso = plan_experiment(fingerprint_stub([(1.0, 1.0, 1.0)], [(50, 50, 50)]), stub_dataset_json(), gpu_memory_gb=24)
    assert iso.slice_axis == 0 and "no single coarsest axis" in iso.decision("slice_axis").reason


def test_thin_slices_give_two_and_a_half_d_context():
    plans = plan_experiment(fingerprint_stub([(1.0, 0.8, 0.8)], [(100, 200, 200)]), stub_dataset_json(),
                            gpu_memory_gb=24)
    mapping = plans.channel_mapping
    assert mapping.mode == "context" and mapping.channels == [0, 0, 0] and mapping.slice_offsets == [-1, 0, 1]


def test_anisotropic_in_plane_axes_keep_per_axis_medians():
    fingerprint = fingerprint_stub([(5.0, 0.5, 2.0), (5.0, 0.6, 2.2), (5.0, 0.7, 2.4)], [(20, 100, 30)] * 3)
    plans = plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=24)
    assert plans.target_spacing == pytest.approx([5.0, 0.6, 2.2])
    assert "per-axis" in plans.decision("target_spacing").reason
    square = plan_experiment(fingerprint_stub([(5.0, 0.5, 0.7), (5.0, 0.6, 0.9)], [(20, 100, 80)] * 2),
                             stub_dataset_json(), gpu_memory_gb=24)
    assert square.target_spacing == pytest.approx([5.0, 0.65, 0.65])  # pooled median of all in-plane spacings


def test_vit_checkpoint_in_the_weights_folder_selects_that_variant(samdg_roots):
    fingerprint = fingerprint_stub([(2.5, 0.8, 0.8)], [(12, 256, 256)])
    (samdg_roots["weights"] / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    plans = plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=80)
    assert plans.sam.variant == "vit_b" and plans.sam.input_size == 1024
    assert plans.sam.checkpoint == str(samdg_roots["weights"] / "sam_vit_b_01ec64.pth")
    assert plans.sam.intensity == "sam_meanstd_255"
    assert plans.training.batch_size == int((0.9 * 80 - 2) // 9.0) == 7
    (samdg_roots["weights"] / "medsam_vit_b.pth").write_bytes(b"x")
    plans = plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=80)
    assert plans.sam.variant == "medsam_vit_b", "medical ViT weights are preferred"
    # an explicit variant wins; small GPUs still get the minimum batch of 2
    plans = plan_experiment(fingerprint, stub_dataset_json(), variant="litemedsam", gpu_memory_gb=4)
    assert plans.sam.variant == "litemedsam" and plans.training.batch_size == 2
    assert plans.decision("sam.variant").reason == "set by the user (--variant)"


def test_bad_variant_and_checkpoint_are_user_errors(tmp_path):
    fingerprint = fingerprint_stub([(2.5, 0.8, 0.8)], [(12, 64, 64)])
    with pytest.raises(SamdgError, match="--variant vit_q: unknown SAM variant; known .*litemedsam"):
        plan_experiment(fingerprint, stub_dataset_json(), variant="vit_q")
    with pytest.raises(SamdgError, match="--checkpoint .*missing.pth: file not found"):
        plan_experiment(fingerprint, stub_dataset_json(), checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(SamdgError, match="--gpu-memory-gb must be positive"):
        plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=0)


def test_overrides_feed_the_planner():
    fingerprint = fingerprint_stub([(2.5, 0.8, 0.8)], [(12, 64, 64)])
    plans = plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=24,
                            overrides={"slice_axis": 2, "sam.variant": "vit_b", "training.num_epochs": 7})
    assert plans.transpose_forward == [2, 0, 1]
    assert plans.target_spacing == pytest.approx([0.8, 2.5, 0.8])  # the slice axis (R) keeps its spacing
    assert plans.sam.variant == "vit_b" and plans.sam.input_size == 1024
    assert plans.training.num_epochs == 7


def test_method_settings_come_from_the_method_registry():
    plans = plan_experiment(fingerprint_stub([(2.5, 0.8, 0.8)], [(12, 64, 64)]), stub_dataset_json(), gpu_memory_gb=24)
    from samdg.models.methods import default_settings, list_methods

    assert plans.methods == {name: dict(default_settings(name)) for name in list_methods()}
    assert plans.methods, "the registry lists at least one method"


def test_variant_table_agrees_with_the_registry():
    variants = registry_variants()
    assert variants["litemedsam"].input_size == 256
    assert variants["vit_b"].checkpoint_filename == "sam_vit_b_01ec64.pth"
    assert variants["medsam_vit_b"].checkpoint_filename == "medsam_vit_b.pth"
