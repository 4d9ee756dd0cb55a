"""Where models run and in which precision: the one device resolver and the one autocast helper of samdg.

    device = resolve_device("auto")                        # cuda, else mps, else cpu
    with autocast(device, "auto"):                         # bf16 (fp16 where bf16 is missing) on CUDA, fp32 elsewhere
        logits = method.predict(images)

Every command's ``--device`` and ``--precision`` go through here, so they accept the same words and fail with the
same one-line errors.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from samdg.errors import SamdgError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(choice: str | torch.device = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` | a torch.device -> the torch.device to run on.

    ``auto`` picks CUDA, else Apple's MPS, else the CPU. A device this machine does not have, or a word that is
    no device, is a SamdgError naming it (a torch.device is checked the same way).
    """
    text = str(choice).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise SamdgError(f"--device '{choice}' is not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SamdgError(f"--device {choice}: no CUDA GPU is visible to PyTorch on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SamdgError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps":
        if not _mps_available():
            raise SamdgError(f"--device {choice}: MPS is not available on this machine (use --device cpu)")
    elif device.type != "cpu":
        raise SamdgError(f"--device {choice}: samdg runs on {DEVICE_CHOICES}")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``--precision`` on ``device`` -> the autocast dtype, or None for full precision.

    ``auto``: bfloat16 on CUDA GPUs that have it (float16 on older ones), full precision elsewhere;
    ``fp32`` / ``bf16`` / ``fp16`` as said.
    """
    if precision not in PRECISIONS:
        raise SamdgError(f"--precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, precision: torch.dtype | str | None) -> ContextManager:
    """Mixed precision on ``device`` for the ``with`` block: a dtype, a ``--precision`` word, or None (fp32)."""
    dtype = autocast_dtype(precision, device) if isinstance(precision, str) else precision
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
