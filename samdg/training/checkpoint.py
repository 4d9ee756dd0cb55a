"""Checkpoint files and rebuilding a trained method from a results folder.

``checkpoint_{latest,best,final}.pth`` (``torch.save``, written atomically) hold one dict:

====================  ===================================================================================
key                   content
====================  ===================================================================================
``format_version``    1
``method``            registered method name (``"sam"``)
``method_settings``   the method's resolved settings (plan + overrides)
``labels``            dataset.json ``labels``; ``regions_class_order`` alongside (label spec)
``variant``           backbone variant name; ``input_size`` its input size; ``sam_checkpoint`` the weights
                      file it was initialised from (informative: the full weights are stored below)
``model_state``       ``state_dict()`` of the whole method (encoder included), DDP wrapper stripped
``optimizer_state``,  optimiser, LR schedule and gradient-scaler states
``scheduler_state``,
``scaler_state``
``epoch``             number of finished epochs
``rng_states``        per process (rank order): Python, numpy, torch (and CUDA) generator states at the end
                      of that epoch
``log``               the training log lines and per-epoch metric records (restored on ``--c``)
``best_ema_dice``,    model-selection state (``best_val_loss``: the lowest validation loss, for a method stage
``ema_dice``,         that selects by it; infinite otherwise)
``best_val_loss``
``training_args``     the resolved training configuration
====================  ===================================================================================

Everything is plain data or tensors, so files load with ``torch.load(..., weights_only=True)``.
:func:`load_trained_method` is what the predictor uses.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.utils.files import atomic_path

FORMAT_VERSION = 1
# --c tries them in this order (nnU-Net's)
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(state, tmp)


# What prediction and --c need from a checkpoint (the rest is checked where it is used).
REQUIRED_KEYS = ("method", "method_settings", "labels", "variant", "input_size", "model_state")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's dict; a missing, empty, truncated or foreign file is a one-line SamdgError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SamdgError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise SamdgError(f"{path}: checkpoint file is empty (0 bytes); retrain or copy it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's many-line message (zip internals, weights_only advice) does not help here
        raise SamdgError(f"{path}: not a readable samdg checkpoint: the file is truncated, damaged or was not "
                         "written by samdg_train") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise SamdgError(f"{path}: not a samdg checkpoint of format version {FORMAT_VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise SamdgError(f"{path}: incomplete samdg checkpoint, it lacks {', '.join(missing)}")
    return state


def load_model_state(module: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """``module.load_state_dict(state["model_state"])``; weights that do not fit the model are a SamdgError."""
    weights = state["model_state"]
    if not isinstance(weights, dict):
        raise SamdgError(f"{path}: 'model_state' is not a dict of weights; the file is damaged")
    try:
        result = module.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes that differ (torch lists every one, over many lines)
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise SamdgError(f"{path}: the weights do not fit the {state['method']} model ({state['variant']}): "
                         f"{first[:300]}") from None
    problems = []
    for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)):
        if keys:
            problems.append(f"{len(keys)} {what} weight(s) (e.g. {keys[0]})")
    if problems:
        raise SamdgError(f"{path}: the weights do not fit the {state['method']} model ({state['variant']}): "
                         f"{'; '.join(problems)}; the file is damaged or from another samdg version")


def capture_rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), int(numpy_state[2]),
                  int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def label_spec_of(state: dict[str, Any]) -> LabelSpec:
    return LabelSpec.from_dataset_json(state["labels"], state.get("regions_class_order"), "checkpoint labels")


def build_untrained(method: str, variant: str, input_size: int, settings: dict, label_spec: LabelSpec,
                    sam_checkpoint: str | None = None, pretrained: bool = True):
    """The method around a freshly built SAM. ``pretrained=False`` skips loading the variant's weights (used
    when a full state dict is loaded right after, so prediction needs no SAM weights file)."""
    from samdg.models.backbones import build_sam
    from samdg.models.methods import build_method

    sam = build_sam(variant, checkpoint=sam_checkpoint, input_size=input_size, pretrained=pretrained)
    return build_method(method, sam, settings, label_spec)


def load_trained_method(fold_dir: str | Path, checkpoint_name: str = "checkpoint_final.pth",
                        device: str | torch.device = "cpu"):
    """Rebuild a trained method from a results fold folder, without the raw or preprocessed data.

    Returns ``(method in eval mode on device, plans, label_spec)``; ``plans`` is the folder's ``plans.json``
    (:class:`samdg.planning.plans.Plans`), the one preprocessing and prediction must follow.
    """
    from samdg.planning.plans import Plans

    fold_dir = Path(fold_dir)
    if not fold_dir.is_dir():
        raise SamdgError(f"{fold_dir}: results folder not found")
    path = fold_dir / checkpoint_name
    if not path.is_file():
        present = [name for name in CHECKPOINT_NAMES if (fold_dir / name).is_file()]
        raise SamdgError(f"{path}: checkpoint not found (present: {', '.join(present) or 'none'}; training may "
                         "not have finished, see training_log.txt)")
    plans = Plans.load(fold_dir / "plans.json")
    state = load_checkpoint(path)
    label_spec = label_spec_of(state)
    method = build_untrained(state["method"], state["variant"], state["input_size"], state["method_settings"],
                             label_spec, pretrained=False)
    load_model_state(method, state, path)
    method.to(device).eval()
    return method, plans, label_spec
