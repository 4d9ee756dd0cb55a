"""Typed method settings: one dataclass per method, registered with it (``@register_method(name, settings=...)``).

The fields are documented and bounded like the plans' (:func:`samdg.utils.schema.doc_field`), so the same
machinery checks them wherever they come from: a plans file (on load), a ``--override methods.<name>.<key>=value``
(typed by the dataclass, not guessed from the current value), a checkpoint, or Python code building a method.
``plans.methods`` keeps plain JSON (``to_plain(settings)``); blocks that lack settings added later load with the
defaults.

:class:`MethodSettings` holds what every method has and the trainer reads (optimiser, schedule, clipping and the
run length a method may publish); :class:`SamMethodSettings` adds the per-class Dice + BCE loss weights of the
SAM-decoder methods. A method's class overrides a default with :func:`redefault`, keeping the doc and bounds.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from samdg.utils.schema import doc_field as _doc
from samdg.utils.schema import from_plain, to_plain


@dataclass
class MethodSettings:
    """Optimisation and run length (every method; the trainer reads these fields and no others)."""

    lr: float = _doc("base learning rate of the optimiser", default=1e-4, exclusive_minimum=0)
    weight_decay: float = _doc("decoupled weight decay (AdamW)", default=0.01, minimum=0)
    betas: list[float] = _doc("Adam(W) betas", default_factory=lambda: [0.9, 0.999], minimum=0, exclusive_maximum=1)
    warmup_fraction: float = _doc("share of all iterations with a linear learning-rate warm-up", default=0.05,
                                  minimum=0, maximum=1)
    poly_exponent: float = _doc("exponent of the poly decay `(1 - t/T)^p` after the warm-up", default=0.9, minimum=0)
    grad_clip: float | None = _doc("clip the gradient norm to this value; null or 0 = no clipping", default=12.0,
                                   minimum=0)
    batch_size: int = _doc("global batch size this method trains with on GPUs; 0 = the plan's "
                           "`training.batch_size` (`--batch-size` wins over both)", default=0, minimum=0)
    num_epochs: int = _doc("epochs this method trains for; 0 = the plan's `training.num_epochs` (`--epochs` wins)",
                           default=0, minimum=0)
    input_size_by_family: dict[str, int] = _doc(
        "input side per backbone family (`vit`, `tinyvit`); replaces `sam.input_size` unless that was overridden, "
        "0 or absent = keep the plan's", default_factory=dict, minimum=0)


@dataclass
class SamMethodSettings(MethodSettings):
    """Optimisation, run length and the per-class soft Dice + BCE loss weights."""

    dice_weight: float = _doc("weight of the soft Dice loss", default=1.0, minimum=0)
    bce_weight: float = _doc("weight of the binary cross-entropy loss", default=1.0, minimum=0)


def redefault(base: type, name: str, value: Any) -> Any:
    """Field ``name`` of dataclass ``base`` with another default (same doc and bounds), for a subclass::

        lr: float = redefault(SamMethodSettings, "lr", 5e-4)
    """
    source = {f.name: f for f in dataclasses.fields(base)}[name]
    if isinstance(value, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(value), metadata=source.metadata)
    return field(default=value, metadata=source.metadata)


def checked_settings(cls: type, settings: Any, where: str):
    """``settings`` (a plain dict, None = defaults, or an instance of ``cls``) as a checked instance of ``cls``:
    unknown keys, types and bounds are one-line SamdgErrors naming ``where.<key>``."""
    plain = to_plain(settings) if dataclasses.is_dataclass(settings) else (settings or {})
    return from_plain(cls, copy.deepcopy(plain), where)
