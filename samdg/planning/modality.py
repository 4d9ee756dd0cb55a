"""Modality of each channel, read from dataset.json ``channel_names``.

The modality picks the intensity normalisation: ``CT`` (calibrated Hounsfield units), ``MR`` (any MR sequence:
arbitrary units that differ per scanner), ``RGB`` (natural or fundus colour images) and ``other``. Names are
matched on their alphanumeric tokens, case-insensitively, so ``"T2"``, ``"t2w"``, ``"T1-Gd"`` and ``"MRI"`` are MR
and ``"CT"``, ``"ct_arterial"`` are CT.
"""

from __future__ import annotations

import re

CT, MR, RGB, OTHER = "CT", "MR", "RGB", "other"

_CT_TOKENS = {"ct", "cect", "ncct", "cta", "cbct", "hu"}
_MR_TOKEN = re.compile(r"^(mr|mri|t1\w*|t2\w*|flair|adc|dwi|pd|pdw|swi|dce|dti|b0|b\d{3,4}|dixon|inphase|"
                       r"outphase|opposed|ssfp|bssfp|cine|lge|pdff)$")
_RGB_TOKENS = {"rgb", "fundus", "natural", "colour", "color", "photo", "dermoscopy", "endoscopy", "histology"}
_COLOUR_NAMES = ({"r", "red"}, {"g", "green"}, {"b", "blue"})


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def modality_of(name: str) -> str:
    """``"CT"``, ``"MR"``, ``"RGB"`` or ``"other"`` for one channel name."""
    tokens = _tokens(name)
    if any(t in _CT_TOKENS for t in tokens):
        return CT
    if any(_MR_TOKEN.match(t) for t in tokens):
        return MR
    if any(t in _RGB_TOKENS for t in tokens):
        return RGB
    return OTHER


def is_rgb_triplet(names: list[str]) -> bool:
    """True for channel names R, G, B (or red, green, blue) in that order: nnU-Net's natural-image convention."""
    return len(names) == 3 and all(set(_tokens(n)) & colours for n, colours in zip(names, _COLOUR_NAMES))


def channel_modalities(channel_names: dict[str, str], num_data_channels: int) -> list[str]:
    """Modality of each data channel.

    ``num_data_channels`` is the channel count of the arrays actually read: a single RGB file gives 3 data
    channels whether dataset.json declares one channel (``{"0": "RGB"}``) or three (``R``, ``G``, ``B``).
    """
    names = [channel_names[k] for k in sorted(channel_names, key=int)]
    if is_rgb_triplet(names):
        return [RGB] * 3
    modalities = [modality_of(n) for n in names]
    if num_data_channels == 3 and len(names) == 1:
        return [RGB] * 3  # one colour file per case
    if len(modalities) < num_data_channels:
        modalities += [modalities[-1]] * (num_data_channels - len(modalities))
    return modalities[:num_data_channels]
