"""External baselines: other tools that samdg runs on its own splits and scores with its own evaluator.

They sit beside the registered methods (``samdg.models.methods``) but are not ``SegmentationMethod`` modules: each
brings its own planning, training and inference, and samdg only prepares its inputs, calls it, and evaluates its
predictions. ``samdg_train`` and ``samdg_benchmark`` consult this registry before the method registry.

An entry names the module that implements the baseline; that module provides

- ``check_available()``: raise :class:`SamdgError` saying what to install when the tool is missing;
- ``train_model(request: TrainRequest, log) -> (fold folder, "trained" | "reused")``;
- ``predict_cases(fold_dir, cases, output_dir, file_ending, device, mirroring) -> (PredictionReport, redone)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from samdg.errors import SamdgError


@dataclass(frozen=True)
class ExternalBaseline:
    """One external baseline: its name on the command line, the module that runs it, and a one-line summary."""

    name: str
    module: str
    summary: str
    options: tuple[tuple[str, str], ...] = ()  # fixed settings of this entry, e.g. (("configuration", "2d"),)

    def load(self) -> ModuleType:
        """The implementing module, after checking that the external tool is installed."""
        module = importlib.import_module(self.module)
        module.check_available()
        return module

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.options)


_BASELINES = {baseline.name: baseline for baseline in (
    ExternalBaseline("nnunet", "samdg.baselines.nnunet", "nnU-Net v2, 2d configuration", (("configuration", "2d"),)),
    ExternalBaseline("nnunet_3d", "samdg.baselines.nnunet", "nnU-Net v2, 3d_fullres configuration",
                     (("configuration", "3d_fullres"),)),
)}


def list_external_baselines() -> list[str]:
    return sorted(_BASELINES)


def is_external_baseline(name: str) -> bool:
    return name in _BASELINES


def get_external_baseline(name: str) -> ExternalBaseline:
    if name not in _BASELINES:
        raise SamdgError(f"unknown external baseline '{name}'; external baselines: "
                         f"{', '.join(list_external_baselines())}")
    return _BASELINES[name]


def method_choices_help() -> str:
    """``sam, desam, ... (methods); nnunet, nnunet_3d (external baselines)`` for the CLIs' help."""
    from samdg.models.methods import list_methods

    return f"{', '.join(list_methods())} (methods); {', '.join(list_external_baselines())} (external baselines)"
